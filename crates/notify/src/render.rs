//! Webhook bodies a person can read: Slack blocks, a Teams MessageCard, or
//! Meridian's plain JSON. Every body carries the notification's key
//! (`idempotency_key`) beside the `Idempotency-Key` header.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Format, Notification, Result, Target, TicketLine, short_id};

/// The most tickets listed in one message; the rest are counted.
pub const TICKET_LINES_MAX: usize = 20;

/// What the outbox stores for one target: where it goes and what is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub target: String,
    pub key: String,
    pub body: Value,
}

pub(crate) fn payload(target: &Target, n: &Notification) -> Result<String> {
    let payload = Payload {
        target: target.name.clone(),
        key: n.key.clone(),
        body: body(target.format, n),
    };
    Ok(serde_json::to_string(&payload)?)
}

/// The body for `format`.
pub fn body(format: Format, n: &Notification) -> Value {
    match format {
        Format::Slack => slack(n),
        Format::Teams => teams(n),
        Format::Json => plain(n),
    }
}

fn line(t: &TicketLine) -> String {
    format!(
        "{} {} — {}; next: {}",
        short_id(t.id),
        t.subject,
        t.sla,
        t.next_step
    )
}

fn more(n: &Notification) -> Option<String> {
    let rest = n.tickets.len().saturating_sub(TICKET_LINES_MAX);
    (rest > 0).then(|| format!("…and {rest} more tickets"))
}

/// The whole message as text: Slack's notification fallback, and what a
/// plain-JSON receiver can show as is.
fn full_text(n: &Notification) -> String {
    let mut text = format!("{}\n{}", n.title, n.text);
    for t in n.tickets.iter().take(TICKET_LINES_MAX) {
        text.push_str("\n• ");
        text.push_str(&line(t));
    }
    if let Some(more) = more(n) {
        text.push('\n');
        text.push_str(&more);
    }
    text
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(n: &Notification) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&n.title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape_slack(&n.text), 3000)}}),
    ];
    for t in n.tickets.iter().take(TICKET_LINES_MAX) {
        let text = format!(
            "*{}* `{}`\n{} · next: {}",
            escape_slack(&t.subject),
            short_id(t.id),
            escape_slack(&t.sla),
            escape_slack(&t.next_step)
        );
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&text, 3000)}}),
        );
    }
    if let Some(more) = more(n) {
        blocks.push(json!({"type": "section", "text": {"type": "plain_text", "text": more}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("{} · {} · {} · key `{}`", n.region, n.kind, n.at, escape_slack(&n.key))}
    ]}));
    json!({
        "text": escape_slack(&full_text(n)),
        "blocks": blocks,
        "idempotency_key": n.key,
    })
}

fn teams(n: &Notification) -> Value {
    let facts: Vec<Value> = n
        .tickets
        .iter()
        .take(TICKET_LINES_MAX)
        .map(|t| {
            json!({
                "name": format!("{} {}", short_id(t.id), t.subject),
                "value": format!("{} · next: {}", t.sla, t.next_step),
            })
        })
        .collect();
    let mut sections = vec![json!({
        "activityTitle": n.title,
        "activitySubtitle": format!("{} · {} · {}", n.region, n.kind, n.at),
        "text": n.text.replace('\n', "<br>"),
        "facts": facts,
    })];
    if let Some(more) = more(n) {
        sections.push(json!({"text": more}));
    }
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": n.title,
        "title": n.title,
        "themeColor": theme(n),
        "sections": sections,
        "idempotency_key": n.key,
    })
}

fn theme(n: &Notification) -> &'static str {
    use crate::Kind::*;
    match n.kind {
        SlaBreach | Stranded | RulesRefused | Takeover => "D13438",
        SlaWarning | Escalation | VolumeSpike => "E8A317",
        ShiftSummary | Return => "2E77D0",
    }
}

fn plain(n: &Notification) -> Value {
    let tickets: Vec<Value> = n
        .tickets
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "short_id": short_id(t.id),
                "subject": t.subject,
                "sla": t.sla,
                "next_step": t.next_step,
            })
        })
        .collect();
    let mut body = json!({
        "idempotency_key": n.key,
        "type": n.kind,
        "region": n.region,
        "title": n.title,
        "text": full_text(n),
        "tickets": tickets,
        "target": n.target,
        "at": n.at,
    });
    // The detail first, so it cannot replace the fields every body has.
    if let (Value::Object(data), Value::Object(fields)) = (&n.data, &body) {
        let mut merged = data.clone();
        merged.extend(fields.clone());
        body = Value::Object(merged);
    }
    body
}

fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(chars_max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use meridian_core::{RegionId, TicketId};

    fn sample() -> Notification {
        let at: jiff::Timestamp = "2026-12-07T08:00:00Z".parse().unwrap();
        Notification {
            key: "shift_summary:us-east:7".into(),
            kind: Kind::ShiftSummary,
            region: RegionId::new("us-east").unwrap(),
            title: "us-east's shift ended: 1 ticket handed to eu-west".into(),
            text: "Next queue owner: alice <eu-west>".into(),
            tickets: vec![TicketLine {
                id: TicketId::new_v7(at, [1, 2, 3, 4, 5, 6, 7, 8, 0xab, 0xcd]),
                subject: "VPN drops every hour".into(),
                sla: "first response due 09:30 (at risk)".into(),
                next_step: "eu-west answers the customer".into(),
            }],
            target: None,
            at,
            data: serde_json::json!({"summary": {"region": "us-east"}, "type": "ignored"}),
        }
    }

    #[test]
    fn bodies_are_readable_and_carry_the_key() {
        let n = sample();
        let short = short_id(n.tickets[0].id);
        assert_eq!(short, "0708abcd", "the random tail, not the time prefix");
        let slack = body(Format::Slack, &n);
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("VPN drops every hour") && text.contains(&short),
            "{text}"
        );
        assert!(text.contains("&lt;eu-west&gt;"), "escaped: {text}");
        assert_eq!(slack["idempotency_key"], "shift_summary:us-east:7");
        assert_eq!(slack["blocks"][0]["type"], "header");
        let teams = body(Format::Teams, &n);
        assert_eq!(teams["@type"], "MessageCard");
        assert!(
            teams["sections"][0]["facts"][0]["name"]
                .as_str()
                .unwrap()
                .contains("VPN")
        );
        assert_eq!(teams["idempotency_key"], "shift_summary:us-east:7");
        let plain = body(Format::Json, &n);
        assert_eq!(plain["type"], "shift_summary");
        assert_eq!(plain["tickets"][0]["short_id"], short.as_str());
        assert_eq!(
            plain["summary"]["region"], "us-east",
            "the detail is merged in"
        );
        assert!(!teams.to_string().contains("ignored") && !slack.to_string().contains("summary\""));
    }
}
