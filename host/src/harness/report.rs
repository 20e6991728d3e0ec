//! What `plugin test` and `plugin bench` print: a table of cases, the problems of failed cases, and
//! JUnit XML for CI systems.

use std::fmt::Write as _;
use std::time::Duration;

use super::{CaseResult, Verdict};
use crate::plugin::CallReport;

/// `12.3 us`, `4.56 ms`, `1.20 s`.
pub fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} us")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

/// Left-aligned first column, right-aligned numbers.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if i <= 1 {
                let _ = write!(text, "{cell:<w$}");
            } else {
                let _ = write!(text, "{cell:>w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The result table, then each failed case's problems, then a summary line.
pub fn test_summary(plugin: &str, results: &[CaseResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let ran = r.report.fuel_used > 0 || r.report.wall > Duration::ZERO;
            let cost = |text: String| if ran { text } else { "-".to_string() };
            vec![
                r.name.clone(),
                r.verdict.label().to_string(),
                cost(r.report.fuel_used.to_string()),
                cost(duration(r.report.wall)),
                cost(kib(r.report.peak_memory_bytes)),
                cost(r.report.host_calls.to_string()),
            ]
        })
        .collect();
    let mut out = table(
        &["CASE", "RESULT", "FUEL", "WALL", "PEAK MEMORY", "HOST CALLS"],
        &rows,
    );
    for r in results {
        for note in &r.notes {
            let _ = writeln!(out, "\n{}: {note}", r.name);
        }
        if r.verdict != Verdict::Fail {
            continue;
        }
        let what = r
            .description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let _ = writeln!(out, "\n=== FAIL {} `{}`{what}", r.name, r.export.name());
        for problem in &r.problems {
            let _ = writeln!(out, "{}", problem.trim_end());
        }
    }
    let failed = results.iter().filter(|r| r.verdict == Verdict::Fail).count();
    let blessed = results.iter().filter(|r| r.verdict == Verdict::Blessed).count();
    let _ = write!(
        out,
        "\n{plugin}: {} passed, {failed} failed",
        results.len() - failed - blessed
    );
    if blessed > 0 {
        let _ = write!(out, ", {blessed} blessed");
    }
    out.push('\n');
    out
}

/// One row of `plugin bench`.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub case: String,
    pub outcome: Result<Vec<CallReport>, String>,
}

pub fn bench_summary(rows: &[BenchRow]) -> String {
    let mut failures = String::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| match &row.outcome {
            Ok(reports) => {
                let (p50, p99, fuel) = super::percentiles(reports);
                let peak = reports.iter().map(|r| r.peak_memory_bytes).max().unwrap_or(0);
                vec![
                    row.case.clone(),
                    reports.len().to_string(),
                    duration(p50),
                    duration(p99),
                    fuel.to_string(),
                    kib(peak),
                ]
            }
            Err(why) => {
                let _ = writeln!(failures, "\n=== FAIL {}: {why}", row.case);
                vec![row.case.clone(), "FAIL".into()]
            }
        })
        .collect();
    let mut out = table(
        &["CASE", "RUNS", "P50", "P99", "FUEL/CALL", "PEAK MEMORY"],
        &cells,
    );
    out.push_str(&failures);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML (the dialect Jenkins, GitLab and GitHub annotations read): one testsuite per plugin, one
/// testcase per fixture, `<failure>` with the problems, the call's cost in `<system-out>`.
pub fn junit(plugin: &str, results: &[CaseResult]) -> String {
    let failures = results.iter().filter(|r| r.verdict == Verdict::Fail).count();
    let total: f64 = results.iter().map(|r| r.report.wall.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"stackhost plugin test\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.6}\">",
        results.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total:.6}\">",
        escape(plugin),
        results.len()
    );
    for r in results {
        let _ = writeln!(
            out,
            "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{:.6}\">",
            escape(&r.name),
            escape(plugin),
            r.export.name(),
            r.report.wall.as_secs_f64()
        );
        if r.verdict == Verdict::Fail {
            let first = r
                .problems
                .first()
                .and_then(|p| p.lines().next())
                .unwrap_or("failed");
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"PluginTestFailure\">{}</failure>",
                escape(first),
                escape(&r.problems.join("\n\n"))
            );
        }
        let _ = writeln!(
            out,
            "      <system-out>{}</system-out>",
            escape(&format!(
                "fuel={} wall_us={:.1} peak_memory_bytes={} host_calls={}",
                r.report.fuel_used,
                r.report.wall.as_secs_f64() * 1e6,
                r.report.peak_memory_bytes,
                r.report.host_calls
            ))
        );
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::fixture::Export;

    fn result(name: &str, verdict: Verdict, problems: &[&str]) -> CaseResult {
        CaseResult {
            name: name.into(),
            export: Export::Info,
            description: None,
            verdict,
            problems: problems.iter().map(|p| p.to_string()).collect(),
            notes: vec![],
            report: CallReport {
                function: "info".into(),
                fuel_used: 1234,
                wall: Duration::from_micros(56),
                peak_memory_bytes: 2048,
                host_calls: 3,
            },
        }
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let xml = junit(
            "p<1>",
            &[
                result("a", Verdict::Pass, &[]),
                result(
                    "b",
                    Verdict::Fail,
                    &["the result differs from x:\n- a & b\n+ \"c\""],
                ),
            ],
        );
        assert!(
            xml.contains(r#"<testsuite name="p&lt;1&gt;" tests="2" failures="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="the result differs from x:""#),
            "{xml}"
        );
        assert!(xml.contains("- a &amp; b\n+ &quot;c&quot;</failure>"), "{xml}");
        assert!(
            xml.contains("fuel=1234 wall_us=56.0 peak_memory_bytes=2048 host_calls=3"),
            "{xml}"
        );
    }

    #[test]
    fn summary_has_a_row_per_case_and_the_problems_of_failures() {
        let text = test_summary(
            "noop",
            &[
                result("a", Verdict::Pass, &[]),
                result("b", Verdict::Fail, &["boom"]),
            ],
        );
        assert!(text.starts_with("CASE  RESULT  FUEL     WALL  PEAK MEMORY  HOST CALLS\na     pass    1234  56.0 us        2 KiB           3\n"), "{text}");
        assert!(text.contains("=== FAIL b `info`\nboom\n"), "{text}");
        assert!(text.ends_with("noop: 1 passed, 1 failed\n"), "{text}");
    }
}
