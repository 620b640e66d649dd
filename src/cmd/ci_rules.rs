//! inspect's CI rules (dive's CI mode): from flags, from a rules file (dive's `.dive-ci`
//! YAML, or `key = value` lines with the flags' names), each range-checked before any
//! image is read. A broken rule is exit 1; a bad value or file is exit 2, as in dive.
//!
//! The file is YAML read with yaml-rust2 (not by hand: quoting, flow maps and comments are
//! YAML's). dive's keys live under `rules:`: `lowestEfficiency` (0..1),
//! `highestWastedBytes` (a size), `highestUserWastedPercent` (0..1, wasted bytes over the
//! bytes added above the bottom layer); each may be `disabled`. The flags' names
//! (`min-efficiency`, `max-wasted-bytes`, `max-wasted-percent`) work at the top level.

use std::path::Path;

use anyhow::{bail, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

use super::image_source::parse_size;
use layerfs_image::inspect::Report;
use layerfs_image::manifest::human;

/// The CI rules, from flags and a config file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rules {
    pub max_wasted_bytes: Option<u64>,
    /// Percent (0..100) of the image's bytes.
    pub max_wasted_percent: Option<f64>,
    /// 0..1: merged bytes / image bytes.
    pub min_efficiency: Option<f64>,
    /// 0..1: wasted bytes / bytes the layers above the bottom one add (dive's
    /// `highestUserWastedPercent`).
    pub max_user_wasted: Option<f64>,
}

/// A ratio in 0..=1 (clap value parser and file values alike).
pub fn ratio(v: &str) -> std::result::Result<f64, String> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a number"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("{v} is outside 0..1"));
    }
    Ok(x)
}

/// A percentage in 0..=100, `%` allowed.
pub fn percent(v: &str) -> std::result::Result<f64, String> {
    let x: f64 = v
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&x) {
        return Err(format!("{v} is outside 0..100"));
    }
    Ok(x)
}

/// A size: `20MB` (10^6), `20MiB` / `20M` (2^20), plain bytes.
pub fn size(v: &str) -> std::result::Result<u64, String> {
    parse_size(v).map_err(|e| e.to_string())
}

impl Rules {
    /// Reads a rules file: dive's `.dive-ci` YAML, or `key = value` lines.
    pub fn parse_file(text: &str) -> Result<Rules> {
        let docs = YamlLoader::load_from_str(text);
        match docs.as_ref().map(|d| d.first()) {
            Ok(Some(Yaml::Hash(_))) => Self::parse_yaml(&docs.expect("checked")[0]),
            Ok(None) => Ok(Rules::default()),
            // Not a YAML map (`a = 1` lines read as one string): the line form.
            Ok(Some(_)) => Self::parse_lines(text),
            // Lines mixing `=` and `:` are no YAML, but good lines.
            Err(e) => Self::parse_lines(text).map_err(|_| anyhow::anyhow!("not YAML: {e}")),
        }
    }

    fn parse_yaml(doc: &Yaml) -> Result<Rules> {
        let mut r = Rules::default();
        let Yaml::Hash(top) = doc else {
            unreachable!("checked by the caller")
        };
        for (k, v) in top {
            let key = k.as_str().context("a key that is not a string")?;
            if key == "rules" {
                let Yaml::Hash(rules) = v else {
                    bail!("rules: expected a map of rules");
                };
                for (k, v) in rules {
                    let key = k.as_str().context("rules: a key that is not a string")?;
                    r.set(key, &scalar(v).with_context(|| format!("rules.{key}"))?)
                        .with_context(|| format!("rules.{key}"))?;
                }
            } else {
                r.set(key, &scalar(v).with_context(|| key.to_string())?)
                    .with_context(|| key.to_string())?;
            }
        }
        Ok(r)
    }

    /// `key = value` (or `key: value`) lines; `#` starts a comment.
    fn parse_lines(text: &str) -> Result<Rules> {
        let mut r = Rules::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with('[') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .with_context(|| format!("line {}: expected key = value", n + 1))?;
            r.set(k.trim(), v.trim().trim_matches('"'))
                .with_context(|| format!("line {}", n + 1))?;
        }
        Ok(r)
    }

    /// Sets the rule `key` (dive's name or the flag's) from `value`; `disabled` unsets it.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let off = value == "disabled";
        let err = |e: String| anyhow::anyhow!("{e}");
        match key.replace('_', "-").as_str() {
            "highestWastedBytes" | "max-wasted-bytes" => {
                self.max_wasted_bytes = if off {
                    None
                } else {
                    Some(size(value).map_err(err)?)
                }
            }
            "max-wasted-percent" => {
                self.max_wasted_percent = if off {
                    None
                } else {
                    Some(percent(value).map_err(err)?)
                }
            }
            "lowestEfficiency" | "min-efficiency" => {
                self.min_efficiency = if off {
                    None
                } else {
                    Some(ratio(value).map_err(err)?)
                }
            }
            "highestUserWastedPercent" | "max-user-wasted" => {
                self.max_user_wasted = if off {
                    None
                } else {
                    Some(ratio(value).map_err(err)?)
                }
            }
            other => bail!(
                "unknown rule {other:?} (dive's lowestEfficiency, highestWastedBytes, \
                 highestUserWastedPercent under rules:, or min-efficiency, max-wasted-bytes, \
                 max-wasted-percent)"
            ),
        }
        Ok(())
    }

    /// The file's rules under the flags' (flags win). In CI mode without `--ci-config`,
    /// dive's `.dive-ci` in the current directory is read when it exists (as dive does).
    pub fn load(file: Option<&Path>, flags: Rules, ci: bool) -> Result<Rules> {
        let default = Path::new(".dive-ci");
        let file = file.or((ci && default.exists()).then_some(default));
        let mut r = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                Self::parse_file(&text).with_context(|| f.display().to_string())?
            }
            None => Rules::default(),
        };
        r.max_wasted_bytes = flags.max_wasted_bytes.or(r.max_wasted_bytes);
        r.max_wasted_percent = flags.max_wasted_percent.or(r.max_wasted_percent);
        r.min_efficiency = flags.min_efficiency.or(r.min_efficiency);
        r.max_user_wasted = flags.max_user_wasted.or(r.max_user_wasted);
        Ok(r)
    }

    /// Checks the report; the first broken rule as a sentence.
    pub fn check(&self, r: &Report) -> Option<String> {
        let t = &r.totals;
        if let Some(max) = self.max_wasted_bytes {
            if t.reclaimable_bytes > max {
                return Some(format!(
                    "max-wasted-bytes: {} bytes ({}) wasted, the limit is {max} bytes ({})",
                    t.reclaimable_bytes,
                    human(t.reclaimable_bytes),
                    human(max)
                ));
            }
        }
        if let Some(max) = self.max_wasted_percent {
            if t.reclaimable_percent > max {
                return Some(format!(
                    "max-wasted-percent: {:.2}% of the image wasted, the limit is {max}%",
                    t.reclaimable_percent
                ));
            }
        }
        if let Some(min) = self.min_efficiency {
            if t.efficiency < min {
                return Some(format!(
                    "min-efficiency: efficiency {:.4}, the minimum is {min}",
                    t.efficiency
                ));
            }
        }
        if let Some(max) = self.max_user_wasted {
            let user: u64 = r.layers.iter().skip(1).map(|l| l.bytes_added).sum();
            let ratio = if user == 0 {
                0.0
            } else {
                t.reclaimable_bytes as f64 / user as f64
            };
            if ratio > max {
                return Some(format!(
                    "highestUserWastedPercent: {ratio:.4} of the {} the layers above the \
                     bottom add is wasted, the limit is {max}",
                    human(user)
                ));
            }
        }
        None
    }
}

/// A YAML scalar as text (`0.9`, `20MB`, `disabled`).
fn scalar(v: &Yaml) -> Result<String> {
    Ok(match v {
        Yaml::Real(s) | Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        other => bail!("expected a number, a size or \"disabled\", got {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files() {
        let r = Rules::parse_file(
            "# dive-like\nmax-wasted-bytes = 20MB\nmax_wasted_percent: 5%\nmin-efficiency = 0.9\n",
        )
        .unwrap();
        assert_eq!(r.max_wasted_bytes, Some(20_000_000));
        assert_eq!(r.max_wasted_percent, Some(5.0));
        assert_eq!(r.min_efficiency, Some(0.9));
        assert!(Rules::parse_file("nonsense = 1").is_err());
    }

    #[test]
    fn dive_ci_files() {
        let r = Rules::parse_file(
            "rules:\n  # If the efficiency is measured below X%, mark as failed.\n  \
             lowestEfficiency: 0.95\n  highestWastedBytes: 20MB\n  \
             highestUserWastedPercent: 0.20\n",
        )
        .unwrap();
        assert_eq!(r.min_efficiency, Some(0.95));
        assert_eq!(r.max_wasted_bytes, Some(20_000_000));
        assert_eq!(r.max_user_wasted, Some(0.2));
        let r = Rules::parse_file(
            "rules:\n  lowestEfficiency: disabled\n  highestWastedBytes: \"1MiB\"\n  \
             highestUserWastedPercent: disabled\n",
        )
        .unwrap();
        assert_eq!(
            r,
            Rules {
                max_wasted_bytes: Some(1 << 20),
                ..Rules::default()
            }
        );
        for bad in [
            "rules:\n  lowestEfficiency: 1.5\n",
            "rules:\n  highestUserWastedPercent: -0.1\n",
            "rules:\n  highestWastedBytes: lots\n",
            "rules:\n  lowestEfficency: 0.9\n",
            "rules: [1, 2]\n",
            "rules:\n  lowestEfficiency: [0.9\n",
        ] {
            assert!(Rules::parse_file(bad).is_err(), "{bad}");
        }
    }
}
