//! Which claims of a verified token say who the caller is, with which role
//! and for which region: Meridian's own tokens carry `sub`, `role` and
//! `region`; an organisation's identity provider carries groups or roles of
//! its own naming (`groups`, `roles`, `realm_access.roles`), which a table
//! maps to Meridian's roles.

use std::collections::BTreeMap;

use meridian_core::RegionId;
use serde_json::{Map, Value};

use crate::{AuthError, Principal, Result, Role};

/// `[auth.claims]`: where the principal is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The claim naming the caller (default `sub`).
    pub subject: String,
    /// The claim carrying the role: a string or an array of strings
    /// (default `role`).
    pub role: String,
    /// The claim carrying an agent's region (default `region`).
    pub region: String,
    /// Values of the role claim (group names) → Meridian roles. Empty: the
    /// values are Meridian role names themselves.
    pub roles: BTreeMap<String, Role>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            role: "role".into(),
            region: "region".into(),
            roles: BTreeMap::new(),
        }
    }
}

impl ClaimMapping {
    /// The principal `claims` describe, if they describe a valid one. When
    /// the role claim names several roles (a user in several groups), the
    /// broadest one counts, in the order intake < agent < operator < sre < admin.
    pub fn principal(&self, claims: &Map<String, Value>) -> Result<Principal> {
        let subject = match lookup(claims, &self.subject) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(AuthError::Claim(format!(
                    "{} is not a string",
                    self.subject
                )));
            }
            None => return Err(AuthError::Claim(format!("{} is missing", self.subject))),
        };
        if subject.is_empty() {
            return Err(AuthError::Claim(format!("{} is empty", self.subject)));
        }
        let role = self.role(lookup(claims, &self.role))?;
        let region = match lookup(claims, &self.region) {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(
                RegionId::new(r)
                    .map_err(|e| AuthError::Claim(format!("{} {r:?}: {e}", self.region)))?,
            ),
            Some(_) => return Err(AuthError::Claim(format!("{} is not a string", self.region))),
        };
        if role == Role::Agent && region.is_none() {
            return Err(AuthError::Claim(
                "an agent token needs a region claim".into(),
            ));
        }
        Ok(Principal {
            subject,
            role,
            region,
        })
    }

    fn role(&self, value: Option<&Value>) -> Result<Role> {
        let claim = &self.role;
        match value {
            None => Err(AuthError::Claim(format!(
                "{claim} is missing: the token carries no role"
            ))),
            // One string, without a table: a Meridian role name, or refused.
            Some(Value::String(name)) if self.roles.is_empty() => name.parse(),
            Some(Value::String(name)) => self.roles.get(name).copied().ok_or_else(|| {
                AuthError::Claim(format!(
                    "{claim} {name:?} is not one of the groups auth.claims.roles maps"
                ))
            }),
            Some(Value::Array(values)) => {
                let names = values.iter().filter_map(Value::as_str);
                let role = if self.roles.is_empty() {
                    names.filter_map(|name| name.parse::<Role>().ok()).max()
                } else {
                    names.filter_map(|name| self.roles.get(name).copied()).max()
                };
                role.ok_or_else(|| {
                    let of = if self.roles.is_empty() {
                        "agent, operator, sre or admin"
                    } else {
                        "the groups auth.claims.roles maps"
                    };
                    AuthError::Claim(format!(
                        "{claim} ({} values) names none of {of}",
                        values.len()
                    ))
                })
            }
            Some(_) => Err(AuthError::Claim(format!(
                "{claim} is neither a string nor an array of strings"
            ))),
        }
    }
}

/// The claim `name`: a top-level claim of that exact name (names may hold
/// dots, as URL-named claims do), else the dotted path into nested objects
/// (`realm_access.roles`).
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn groups_map_to_the_broadest_role() {
        let mapping = ClaimMapping {
            role: "groups".into(),
            roles: [
                ("support-eu".to_owned(), Role::Agent),
                ("platform".to_owned(), Role::Sre),
            ]
            .into(),
            ..ClaimMapping::default()
        };
        let p = mapping
            .principal(&claims(
                json!({"sub": "u1", "groups": ["x", "support-eu", "platform"]}),
            ))
            .unwrap();
        assert_eq!(p.role, Role::Sre);
        let p = mapping
            .principal(&claims(
                json!({"sub": "u1", "groups": "support-eu", "region": "eu-west"}),
            ))
            .unwrap();
        assert_eq!(
            (p.role, p.region.unwrap().to_string()),
            (Role::Agent, "eu-west".to_owned())
        );
        let err = mapping
            .principal(&claims(json!({"sub": "u1", "groups": ["x"]})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "token claims: groups (1 values) names none of the groups auth.claims.roles maps"
        );
    }

    #[test]
    fn nested_and_dotted_claim_names() {
        let mapping = ClaimMapping {
            subject: "preferred_username".into(),
            role: "realm_access.roles".into(),
            region: "https://meridian/region".into(),
            roles: BTreeMap::new(),
        };
        let token = json!({
            "preferred_username": "ana",
            "realm_access": {"roles": ["offline_access", "agent"]},
            "https://meridian/region": "us-east",
        });
        let p = mapping.principal(&claims(token)).unwrap();
        assert_eq!((p.subject.as_str(), p.role), ("ana", Role::Agent));
    }
}
