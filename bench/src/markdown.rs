//! Cutting a Markdown report at its `## ` headings, so that a regenerated
//! `bench/results.md` keeps the sections written by hand (or by other
//! scripts, such as `bench/soak.sh`'s "Soak") that the generator does not
//! write itself.

/// One `## ` section: its title (the heading without `## `) and its text,
/// from the heading line up to the next `## ` heading or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    pub title: &'a str,
    pub text: &'a str,
}

/// Whether a line opens or closes a fenced code block (```` ``` ```` or
/// `~~~`, indented by at most three spaces).
fn is_fence(line: &str) -> bool {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    indent <= 3 && (rest.starts_with("```") || rest.starts_with("~~~"))
}

/// The title of a `## ` heading line, if it is one.
fn heading(line: &str) -> Option<&str> {
    let line = line.trim_end_matches(['\n', '\r']);
    line.strip_prefix("## ").map(str::trim)
}

/// Splits `md` into what precedes its first `## ` heading and its `## `
/// sections, in order. Headings inside fenced code blocks do not count;
/// `### ` and deeper stay inside their section. Concatenating the preamble
/// and every section's text gives back `md` exactly.
pub fn split_sections(md: &str) -> (&str, Vec<Section<'_>>) {
    let mut starts: Vec<(usize, &str)> = Vec::new();
    let mut in_fence = false;
    let mut offset = 0;
    for line in md.split_inclusive('\n') {
        if is_fence(line) {
            in_fence = !in_fence;
        } else if !in_fence {
            if let Some(title) = heading(line) {
                starts.push((offset, title));
            }
        }
        offset += line.len();
    }
    let preamble = &md[..starts.first().map_or(md.len(), |s| s.0)];
    let sections = starts
        .iter()
        .enumerate()
        .map(|(i, &(start, title))| {
            let end = starts.get(i + 1).map_or(md.len(), |s| s.0);
            Section {
                title,
                text: &md[start..end],
            }
        })
        .collect();
    (preamble, sections)
}

/// The new report: `generated` as it is, then every `## ` section of
/// `old` whose title `generated` does not have, verbatim and in their
/// original order, each after one blank line. `old`'s preamble (the title
/// and header table) is the generator's, so it is dropped.
pub fn merge_kept_sections(old: &str, generated: &str) -> String {
    let (_, new_sections) = split_sections(generated);
    let (_, old_sections) = split_sections(old);
    let mut out = generated.trim_end_matches('\n').to_owned();
    out.push('\n');
    for kept in old_sections
        .iter()
        .filter(|s| !new_sections.iter().any(|n| n.title == s.title))
    {
        out.push('\n');
        out.push_str(kept.text.trim_end_matches('\n'));
        out.push('\n');
    }
    out
}

/// The titles of the sections `merge_kept_sections(old, generated)` keeps
/// from `old`.
pub fn kept_titles<'a>(old: &'a str, generated: &str) -> Vec<&'a str> {
    let (_, new_sections) = split_sections(generated);
    split_sections(old)
        .1
        .into_iter()
        .filter(|s| !new_sections.iter().any(|n| n.title == s.title))
        .map(|s| s.title)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "# Tollgate benchmark results\n\n| | |\n|---|---|\n| date | old |\n\n\
## HasAccess hot path\n\nold figures\n\n### sub heading\n\nmore old figures\n\n\
## Hot path before and after\n\nhand-written A\n\n```sh\n## not a heading\n```\n\ntail of A\n\n\
## Reconciler catch-up (reconcile-load)\n\nold generated\n\n\
## Soak\n\nsoak table\n| a | b |\n\n\n\
## Feature decision (criterion)\n\nhand-written B, last, no final newline";

    const NEW: &str = "# Tollgate benchmark results\n\n| | |\n|---|---|\n| date | new |\n\n\
## HasAccess hot path\n\nnew figures\n\n\
## Reconciler catch-up (reconcile-load)\n\nnew generated\n";

    #[test]
    fn splitting_gives_back_the_text() {
        let (pre, sections) = split_sections(OLD);
        let titles: Vec<_> = sections.iter().map(|s| s.title).collect();
        assert_eq!(
            titles,
            [
                "HasAccess hot path",
                "Hot path before and after",
                "Reconciler catch-up (reconcile-load)",
                "Soak",
                "Feature decision (criterion)"
            ]
        );
        let joined: String = std::iter::once(pre)
            .chain(sections.iter().map(|s| s.text))
            .collect();
        assert_eq!(joined, OLD);
        assert!(sections[1]
            .text
            .contains("## not a heading\n```\n\ntail of A"));
        assert!(sections[0].text.contains("### sub heading"));
    }

    #[test]
    fn sections_the_report_does_not_write_are_kept_verbatim_in_order() {
        let merged = merge_kept_sections(OLD, NEW);
        let expected = format!(
            "{NEW}\n## Hot path before and after\n\nhand-written A\n\n```sh\n## not a heading\n```\n\ntail of A\n\
             \n## Soak\n\nsoak table\n| a | b |\n\
             \n## Feature decision (criterion)\n\nhand-written B, last, no final newline\n"
        );
        assert_eq!(merged, expected);
        assert_eq!(
            kept_titles(OLD, NEW),
            [
                "Hot path before and after",
                "Soak",
                "Feature decision (criterion)"
            ]
        );
        // Generated sections replace their old versions; the old header goes.
        assert!(!merged.contains("old figures"));
        assert!(!merged.contains("old generated"));
        assert!(!merged.contains("| date | old |"));
    }

    #[test]
    fn merging_twice_changes_nothing() {
        let once = merge_kept_sections(OLD, NEW);
        assert_eq!(merge_kept_sections(&once, NEW), once);
    }

    #[test]
    fn without_an_old_report_the_generated_one_is_written_as_is() {
        assert_eq!(merge_kept_sections("", NEW), NEW);
        assert_eq!(merge_kept_sections("just a preamble\n", NEW), NEW);
    }
}
