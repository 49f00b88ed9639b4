//! `tests/conformance/DIFFERENCES.md`: every known difference between ferry's bridge and
//! cockpit-bridge, with its reason and the rules that let the runner tolerate exactly it.
//!
//! Each entry starts with a `## ` heading whose first backquoted word is its id, explains the
//! difference in prose, and lists its rules on lines of the form
//! `allow SCENARIO: RULE` (against every reference) or `allow[REF] SCENARIO: RULE` (against
//! reference REF only: `287` or `337`); SCENARIO `*` means every scenario; RULE as in
//! [`Rule::parse`].

use super::transcript::Rule;

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub rules: Vec<Allow>,
}

/// One `allow` line.
#[derive(Debug, Clone)]
pub struct Allow {
    /// The reference it applies to (`287`, `337`), or `None` for every reference.
    pub reference: Option<String>,
    pub scenario: String,
    pub rule: Rule,
}

pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut prose = 0usize;
    let finish = |entries: &[Entry], prose: usize| -> Result<(), String> {
        match entries.last() {
            Some(e) if prose == 0 => Err(format!("entry `{}` gives no reason", e.id)),
            Some(e) if e.rules.is_empty() => Err(format!("entry `{}` has no allow line", e.id)),
            _ => Ok(()),
        }
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(heading) = line.strip_prefix("## ") {
            finish(&entries, prose)?;
            let id = heading
                .split('`')
                .nth(1)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| format!("line {}: heading without a `id`", i + 1))?;
            if entries.iter().any(|e| e.id == id) {
                return Err(format!("line {}: duplicate id `{id}`", i + 1));
            }
            entries.push(Entry {
                id: id.to_owned(),
                rules: Vec::new(),
            });
            prose = 0;
        } else if let Some((reference, allow)) = allow_line(line) {
            let entry = entries
                .last_mut()
                .ok_or_else(|| format!("line {}: allow line outside an entry", i + 1))?;
            let reference = match reference {
                None => None,
                Some(r @ ("287" | "337")) => Some(r.to_owned()),
                Some(r) => return Err(format!("line {}: unknown reference {r:?}", i + 1)),
            };
            let (scenario, rule) = allow
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected `allow SCENARIO: RULE`", i + 1))?;
            let rule = Rule::parse(rule.trim()).map_err(|e| format!("line {}: {e}", i + 1))?;
            entry.rules.push(Allow {
                reference,
                scenario: scenario.trim().to_owned(),
                rule,
            });
        } else if !line.is_empty() && !line.starts_with("```") && !entries.is_empty() {
            prose += 1;
        }
    }
    finish(&entries, prose)?;
    Ok(entries)
}

/// `allow REST` or `allow[REF] REST`: the reference, if any, and REST.
fn allow_line(line: &str) -> Option<(Option<&str>, &str)> {
    if let Some(rest) = line.strip_prefix("allow ") {
        return Some((None, rest));
    }
    let rest = line.strip_prefix("allow[")?;
    let (reference, rest) = rest.split_once("] ")?;
    Some((Some(reference), rest))
}

/// A rule that applies to a scenario.
pub struct Applicable<'a> {
    pub id: &'a str,
    pub rule: &'a Rule,
    /// Whether it names this scenario (rather than applying to every scenario).
    pub named: bool,
}

/// The rules that apply to `scenario` against `reference`, each with the id of its entry.
pub fn rules_for<'a>(entries: &'a [Entry], scenario: &str, reference: &str) -> Vec<Applicable<'a>> {
    entries
        .iter()
        .flat_map(|e| {
            e.rules
                .iter()
                .filter(|a| a.scenario == "*" || a.scenario == scenario)
                .filter(|a| a.reference.as_deref().is_none_or(|r| r == reference))
                .map(|a| Applicable {
                    id: &e.id,
                    rule: &a.rule,
                    named: a.scenario == scenario,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_rejects_unexplained_ones() {
        let text = "# Differences\n\nIntro.\n\n## `a-b`: title\n\nBecause.\n\n    allow echo: drop a ready\n    allow *: ignore-exit\n    allow[287] echo: drop a close\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(rules_for(&entries, "echo", "287").len(), 3);
        assert_eq!(rules_for(&entries, "echo", "337").len(), 2);
        assert_eq!(rules_for(&entries, "null", "337").len(), 1);
        assert!(parse("## `x`: t\nBecause.\n    allow[999] echo: drop a ready\n").is_err());
        assert!(parse("## `x`: t\n    allow echo: drop a ready\n").is_err());
        assert!(parse("## `x`: t\nBecause.\n").is_err());
        assert!(parse("## `x`: t\nBecause.\n    allow echo: frob\n").is_err());
    }
}
