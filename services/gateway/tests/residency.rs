//! Residency across a real three-region mesh: a ticket pinned to us-east,
//! and one pinned to us-east and eu-west, with subjects, bodies, customers,
//! notes, updates and handoffs. Handoffs and notes outside a ticket's set
//! are refused, naming residency; then every region's database is read
//! directly (every text column of every table, and for SQLite the raw
//! bytes of its files) and no region outside a ticket's set holds any of
//! its text, while the envelope (owner, status, epoch) converged everywhere
//! and the regions of the set hold everything. Search finds each ticket by
//! its words inside its set and by none of them outside.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Mesh, Options, REGIONS};
use meridian_proto::v1;
use meridian_test_support::{Backing, TestDatabase};
use sqlx::{AnyConnection, Column, Connection, Row};
use tonic::Code;

/// Text written on the ticket pinned to us-east: none may leave it.
const ALPHA: [&str; 6] = [
    "ALPHA-SUBJECT-4471",
    "ALPHA-BODY-8812",
    "ALPHA-CUSTOMER-3390",
    "ALPHA-NOTE-5526",
    "ALPHA-UPDATE-NOTE-1187",
    "ALPHA-AUTHOR-2264",
];
/// Text written on the ticket pinned to us-east and eu-west.
const BETA: [&str; 7] = [
    "BETA-SUBJECT-9023",
    "BETA-BODY-6604",
    "BETA-CUSTOMER-7745",
    "BETA-NOTE-1359",
    "BETA-HANDOFF-LAST-4826",
    "BETA-HANDOFF-TEXT-3017",
    "BETA-EU-NOTE-5598",
];

fn pinned(marks: &[&str], residency: &[&str]) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: marks[0].into(),
        body: format!("{}\nthe customer's account is 4000-1234", marks[1]),
        customer: marks[2].into(),
        tier: "premium".into(),
        residency: residency.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    }
}

fn note(ticket_id: &str, author: &str, body: &str) -> v1::AddNoteRequest {
    v1::AddNoteRequest {
        ticket_id: ticket_id.into(),
        author: author.into(),
        body: body.into(),
        visibility: 0,
        note_id: String::new(),
    }
}

fn handoff(ticket_id: &str, to: &str, last_action: &str, text: &str) -> v1::HandoffRequest {
    v1::HandoffRequest {
        ticket_id: ticket_id.into(),
        to_region: to.into(),
        note: Some(v1::HandoffNote {
            current_status: v1::Status::Open.into(),
            last_action: last_action.into(),
            next_action: "call the customer back".into(),
            deadline: None,
            text: text.into(),
            author: "ana".into(),
        }),
    }
}

/// Every piece of text a region's database holds: each text column of each
/// of its tables and views (the search index's too), read through SQL, and
/// for SQLite also the raw bytes of the database file and its write-ahead
/// log (which would show text even in pages no table reaches any more).
async fn everything_in(db: &TestDatabase) -> String {
    let mut dump = String::new();
    let mut conn = AnyConnection::connect(&db.config().url).await.unwrap();
    let tables_sql = match db.backing {
        Backing::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Backing::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()"
        }
    };
    let tables: Vec<String> = sqlx::query(tables_sql)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    assert!(
        tables.iter().any(|t| t == "events") && tables.iter().any(|t| t == "notes"),
        "{tables:?}"
    );
    let mut columns_read = 0;
    for table in &tables {
        // On PostgreSQL each row as JSON text: the Any driver decodes no
        // tsvector (the search index), and JSON shows every column.
        let select = match db.backing {
            Backing::Sqlite => format!("SELECT * FROM {table}"),
            Backing::Postgres => format!("SELECT CAST(row_to_json(t) AS TEXT) FROM {table} t"),
        };
        for row in sqlx::query(&select).fetch_all(&mut conn).await.unwrap() {
            for column in row.columns() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(column.ordinal()) {
                    columns_read += 1;
                    dump.push_str(&text);
                    dump.push('\n');
                }
            }
        }
    }
    assert!(columns_read > 0);
    conn.close().await.unwrap();
    if let Some(path) = db.sqlite_path() {
        for file in [path.clone(), path.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                dump.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_text_never_leaves_its_regions_sqlite() {
    residency(None).await;
}

/// eu-west on PostgreSQL: outside one ticket's set, inside the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_text_never_leaves_its_regions_postgres() {
    if meridian_test_support::postgres_url().is_some() {
        residency(Some("eu-west")).await;
    }
}

async fn residency(postgres_for: Option<&str>) {
    let mesh = Mesh::start(Options {
        postgres_for,
        ..Options::default()
    })
    .await;
    let mut us = mesh.client("us-east").await;
    let mut eu = mesh.client("eu-west").await;
    let mut apac = mesh.client("apac-south").await;

    // Created only inside the set.
    let refused = apac
        .create_ticket(pinned(&ALPHA, &["us-east"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("residency: apac-south is outside the ticket's residency (us-east)"),
        "{}",
        refused.message()
    );

    let alpha = us
        .create_ticket(pinned(&ALPHA, &["us-east"]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let beta = us
        .create_ticket(pinned(&BETA, &["us-east", "eu-west"]))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let open = |id: &str| v1::UpdateTicketRequest {
        ticket_id: id.into(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    };
    us.update_ticket(open(&alpha.id)).await.unwrap();
    us.update_ticket(open(&beta.id)).await.unwrap();
    us.add_note(note(&alpha.id, ALPHA[5], ALPHA[3]))
        .await
        .unwrap();
    us.add_note(note(&beta.id, "ana", BETA[3])).await.unwrap();
    us.update_ticket(v1::UpdateTicketRequest {
        ticket_id: alpha.id.clone(),
        assignee: Some("ana".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    us.add_note(note(&alpha.id, "ana", ALPHA[4])).await.unwrap();

    // Handoffs outside the set are refused, naming residency; the owner keeps the ticket.
    for (ticket, to, set) in [
        (&alpha, "eu-west", "us-east"),
        (&alpha, "apac-south", "us-east"),
        (&beta, "apac-south", "eu-west, us-east"),
    ] {
        let refused = us
            .handoff(handoff(&ticket.id, to, "tried", "nothing"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(
            refused.message(),
            format!(
                "to_region: {to} is outside the ticket's residency ({set}); its data may not move there"
            )
        );
    }
    // Inside the set it goes through.
    let handed = us
        .handoff(handoff(&beta.id, "eu-west", BETA[4], BETA[5]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        handed.ticket.unwrap().owner.unwrap().owner_region,
        "eu-west"
    );
    eu.add_note(note(&beta.id, "bo", BETA[6])).await.unwrap();
    eu.update_ticket(v1::UpdateTicketRequest {
        ticket_id: beta.id.clone(),
        assignee: Some("bo".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    // A region outside the set holds no text of the ticket, so it may not write any.
    mesh.wait_quiet().await;
    for (ticket, region) in [
        (&alpha, "eu-west"),
        (&alpha, "apac-south"),
        (&beta, "apac-south"),
    ] {
        let refused = mesh
            .client(region)
            .await
            .add_note(note(&ticket.id, "bo", "a note from outside"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused.message().starts_with(&format!(
                "residency: {region} is outside the ticket's residency"
            )),
            "{}",
            refused.message()
        );
    }

    // Logs and projections converged (redacted copies outside each set).
    mesh.check_invariants().await;

    // The envelope is the same everywhere; the text only inside the set.
    let mut envelopes = Vec::new();
    for name in REGIONS {
        let mut client = mesh.client(name).await;
        for (ticket, set, marks) in [
            (&alpha, &["us-east"][..], &ALPHA[..]),
            (&beta, &["us-east", "eu-west"][..], &BETA[..]),
        ] {
            let got = client
                .get_ticket(v1::GetTicketRequest {
                    ticket_id: ticket.id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            let t = got.ticket.unwrap();
            envelopes.push((
                ticket.id.clone(),
                name,
                t.owner.clone(),
                t.status,
                t.assignee.clone(),
                t.tier.clone(),
                got.notes.len(),
            ));
            if set.contains(&name) {
                assert_eq!(t.subject, marks[0], "{name}");
                assert!(got.notes.iter().all(|n| !n.body.is_empty()), "{name}");
            } else {
                assert_eq!(
                    (t.subject.as_str(), t.body.as_str(), t.customer.as_str()),
                    ("", "", ""),
                    "{name}"
                );
                assert!(
                    got.notes
                        .iter()
                        .all(|n| n.body.is_empty() && n.author.is_empty()),
                    "{name}: {:?}",
                    got.notes
                );
            }
        }
    }
    for (id, name, owner, status, assignee, tier, notes) in &envelopes {
        let first = envelopes.iter().find(|e| &e.0 == id).unwrap();
        assert_eq!(
            (owner, status, assignee, tier, notes),
            (&first.2, &first.3, &first.4, &first.5, &first.6),
            "{name}"
        );
    }
    // Search finds each ticket by any of its words inside its set, and by
    // none of them outside (the author is not searched).
    for name in REGIONS {
        let mut client = mesh.client(name).await;
        for (ticket, set, marks) in [
            (&alpha, &["us-east"][..], &ALPHA[..5]),
            (
                &beta,
                &["us-east", "eu-west"][..],
                &[BETA[0], BETA[1], BETA[2], BETA[3], BETA[6]][..],
            ),
        ] {
            for mark in marks {
                let found: Vec<String> = client
                    .search_tickets(v1::SearchTicketsRequest {
                        query: (*mark).into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .tickets
                    .into_iter()
                    .map(|t| t.id)
                    .collect();
                if set.contains(&name) {
                    assert_eq!(
                        found,
                        std::slice::from_ref(&ticket.id),
                        "{name} searching {mark}"
                    );
                } else {
                    assert!(
                        found.is_empty(),
                        "{name} is outside the set but finds {mark}"
                    );
                }
            }
        }
    }
    let beta_owner = envelopes
        .iter()
        .find(|e| e.0 == beta.id)
        .unwrap()
        .2
        .clone()
        .unwrap();
    assert_eq!(
        (beta_owner.owner_region.as_str(), beta_owner.epoch),
        ("eu-west", 1)
    );
    // alpha: the creation's note and the later one; beta: us-east's, the handoff's, eu-west's.
    assert_eq!(envelopes.iter().find(|e| e.0 == alpha.id).unwrap().6, 2);
    assert_eq!(envelopes.iter().find(|e| e.0 == beta.id).unwrap().6, 3);

    // Straight from the databases.
    for region in &mesh.regions {
        let dump = everything_in(&region.db).await;
        let name = region.name.as_str();
        for (marks, set) in [
            (&ALPHA[..], &["us-east"][..]),
            (&BETA[..], &["us-east", "eu-west"][..]),
        ] {
            for mark in marks {
                let found = dump.contains(mark);
                if set.contains(&name) {
                    assert!(found, "{name} is in the set but lacks {mark}");
                } else {
                    assert!(!found, "{name} is outside the set but holds {mark}");
                }
            }
        }
        assert_eq!(
            dump.contains("4000-1234"),
            name != "apac-south",
            "{name}: the body's account number"
        );
    }
    mesh.stop().await;
}
