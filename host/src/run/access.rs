//! Who may read what the process serves, asked of the API server: a TokenReview turns a bearer token
//! into a user, a SubjectAccessReview asks RBAC whether that user may use a non-resource URL. The
//! API server stays the only place where access is granted (a ClusterRole with `nonResourceURLs`).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// The answer for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The token names a user whom RBAC allows the request.
    Allowed,
    /// The API server did not accept the token (why).
    Unauthenticated(String),
    /// The user may not (who, and RBAC's reason when it gave one).
    Denied(String),
}

/// Why the API server could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Creating the TokenReview failed (e.g. stackhost may not `create` `tokenreviews`).
    #[error("cannot review the token with the API server (stackhost needs create on tokenreviews.authentication.k8s.io): {0}")]
    TokenReview(#[source] kube::Error),
    /// Creating the SubjectAccessReview failed.
    #[error("cannot ask the API server whether {user} may {verb} {path} (stackhost needs create on subjectaccessreviews.authorization.k8s.io): {source}")]
    AccessReview {
        /// The user.
        user: String,
        /// The verb.
        verb: String,
        /// The URL path.
        path: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// Whether the holder of `token` may `verb` the non-resource URL `path`.
pub async fn review(
    client: &kube::Client,
    token: &str,
    path: &str,
    verb: &str,
) -> Result<Access, AccessError> {
    let tokens: Api<TokenReview> = Api::all(client.clone());
    let reviewed = tokens
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: None,
                },
                ..Default::default()
            },
        )
        .await
        .map_err(AccessError::TokenReview)?;
    let status = reviewed.status.unwrap_or_default();
    let user = status.user.unwrap_or_default();
    let name = user.username.clone().unwrap_or_default();
    if status.authenticated != Some(true) || name.is_empty() {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the API server did not accept the token".to_owned());
        return Ok(Access::Unauthenticated(why));
    }
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let decided = reviews
        .create(
            &PostParams::default(),
            &SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(name.clone()),
                    groups: user.groups,
                    uid: user.uid,
                    extra: user.extra,
                    non_resource_attributes: Some(NonResourceAttributes {
                        path: Some(path.to_owned()),
                        verb: Some(verb.to_owned()),
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .map_err(|source| AccessError::AccessReview {
            user: name.clone(),
            verb: verb.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    let decision = decided.status.unwrap_or_default();
    if decision.allowed {
        return Ok(Access::Allowed);
    }
    let reason = decision.reason.filter(|r| !r.is_empty());
    Ok(Access::Denied(format!(
        "user \"{name}\" may not {verb} {path}{}",
        reason.map(|r| format!(": {r}")).unwrap_or_default()
    )))
}
