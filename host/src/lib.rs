//! stackhost
