//! Webhook targets: where notifications go, in which format, and which
//! kinds each receives.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{Error, Kind, Result};

/// The body a target's receiver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A Slack incoming webhook: `{"text": …, "blocks": […]}`.
    Slack,
    /// A Microsoft Teams incoming webhook: a MessageCard.
    Teams,
    /// Meridian's own JSON: the notification as data.
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "slack" => Some(Format::Slack),
            "teams" => Some(Format::Teams),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// One webhook that receives notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Names it in dead letters, logs, metrics and an escalation path's
    /// `on_call`.
    pub name: String,
    /// `https://…`; `http://` only to a loopback address (development).
    pub url: String,
    pub format: Format,
    /// PEM CA(s) that alone are trusted for the receiver's certificate;
    /// without it, the public web PKI (bundled Mozilla roots).
    pub ca: Option<PathBuf>,
    /// The kinds it receives; empty means every kind.
    pub kinds: Vec<Kind>,
}

impl Target {
    /// A target after checking its name and URL (the CA file is read when
    /// the delivery client is built, [`crate::deliver`]).
    pub fn new(
        name: &str,
        url: &str,
        format: Format,
        ca: Option<PathBuf>,
        kinds: Vec<Kind>,
    ) -> Result<Target> {
        check_name(name)?;
        check_url(url)
            .map_err(|reason| Error::Config(format!("target {name}: url {url:?}: {reason}")))?;
        Ok(Target {
            name: name.to_owned(),
            url: url.to_owned(),
            format,
            ca,
            kinds,
        })
    }

    /// Parses `NAME=URL[,format=slack|teams|json][,kinds=a+b][,ca=PATH]`
    /// (the `meridian up --webhook` form). The format defaults to json.
    pub fn parse_spec(spec: &str) -> Result<Target> {
        let bad = |reason: String| Error::Config(format!("webhook {spec:?}: {reason}"));
        let (name, rest) = spec.split_once('=').ok_or_else(|| {
            bad("expected NAME=URL[,format=slack|teams|json][,kinds=a+b][,ca=PATH]".into())
        })?;
        let mut parts = rest.split(',');
        let url = parts.next().unwrap_or_default();
        let (mut format, mut kinds, mut ca) = (Format::Json, Vec::new(), None);
        for part in parts {
            match part.split_once('=') {
                Some(("format", value)) => {
                    format = Format::parse(value).ok_or_else(|| {
                        bad(format!("format {value:?} is not slack, teams or json"))
                    })?;
                }
                Some(("kinds", value)) => {
                    kinds = parse_kinds(value.split('+')).map_err(bad)?;
                }
                Some(("ca", value)) => ca = Some(PathBuf::from(value)),
                _ => {
                    return Err(bad(format!(
                        "unknown option {part:?} (format=, kinds=, ca=)"
                    )));
                }
            }
        }
        Target::new(name, url, format, ca, kinds)
    }

    /// Whether it receives notifications of `kind` sent to all targets.
    pub fn receives(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }
}

/// Kinds by name; an unknown one is an error that lists the known ones.
pub fn parse_kinds<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Kind>, String> {
    names
        .into_iter()
        .map(|name| {
            Kind::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {name:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "target name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// `https://host[:port]/path`, or `http://` to a loopback host.
pub(crate) fn check_url(url: &str) -> std::result::Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(
            "plain http:// is allowed only to a loopback address (development); use https://"
                .into(),
        ),
        _ => Err("must start with https://".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Target names must be unique: they key the outbox items.
pub(crate) fn check_unique(targets: &[Target]) -> Result<()> {
    let mut seen = HashSet::new();
    for target in targets {
        if !seen.insert(target.name.as_str()) {
            return Err(Error::Config(format!(
                "two notification targets are named {:?}; names must be unique",
                target.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let t = Target::parse_spec(
            "ops=https://hooks.example.com/x,format=slack,kinds=sla_breach+escalation",
        )
        .unwrap();
        assert_eq!(t.name, "ops");
        assert_eq!(t.format, Format::Slack);
        assert_eq!(t.kinds, vec![Kind::SlaBreach, Kind::Escalation]);
        assert!(t.receives(Kind::Escalation) && !t.receives(Kind::ShiftSummary));
        let dev = Target::parse_spec("dev=http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(dev.format, Format::Json);
        assert!(dev.receives(Kind::RulesRefused));
        for (spec, says) in [
            ("ops=http://hooks.example.com/x", "loopback"),
            ("ops=ftp://x/", "https://"),
            ("ops=https://x/,format=xml", "format \"xml\""),
            ("ops=https://x/,kinds=nope", "unknown kind \"nope\""),
            ("ops=https://x/,colour=red", "unknown option"),
            ("o ps=https://x/", "target name"),
            ("https://x/", "expected NAME=URL"),
        ] {
            let error = Target::parse_spec(spec).unwrap_err().to_string();
            assert!(error.contains(says), "{spec}: {error}");
        }
    }
}
