//! A simulated week of follow-the-sun traffic for ten regions: ten real
//! gateways (SQLite, mutual-TLS mesh, the rules below) in this process on
//! one manual clock, driven from a Monday 00:00 UTC through Sunday in steps
//! of ten simulated minutes. Each step, tickets arrive, are routed by the
//! rules to the region on shift and created there over gRPC; tickets are
//! solved some hours after they arrive, by whichever region owns them by
//! then; and the gateways' own shift tasks hand the open ones on at every
//! shift end. The figure is the wall-clock time the week takes; the
//! ownership that moved and the convergence of the mesh are checked.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use meridian_core::{Clock, ManualClock, Priority, RegionId, Tier};
use meridian_gateway::{GatewayConfig, Listeners, MeshSettings, RulesSettings};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_rules::{RegionHealth, RegionLoad, RouteRequest, Rules};
use meridian_store::StoreConfig;
use meridian_tls::{DevPkiPlan, Service, TlsFiles, TrustDomain, Validity, write_dev_pki};
use tokio::net::TcpListener;
use tonic::{Code, transport::Channel};

use crate::{
    Sizes,
    progress::Progress,
    report::{Row, ScenarioReport},
};

/// Ten regions around the globe, in epoch-index order.
const REGIONS: [(&str, &str); 10] = [
    ("us-west", "America/Los_Angeles"),
    ("us-east", "America/New_York"),
    ("sa-east", "America/Sao_Paulo"),
    ("eu-west", "Europe/Dublin"),
    ("eu-central", "Europe/Berlin"),
    ("me-central", "Asia/Dubai"),
    ("ap-south", "Asia/Kolkata"),
    ("ap-southeast", "Asia/Singapore"),
    ("ap-northeast", "Asia/Tokyo"),
    ("au-east", "Australia/Sydney"),
];
const MONDAY: &str = "2026-06-01T00:00:00Z";
const STEP_MINUTES: i64 = 10;

/// Rules for the ten regions: a weekday day shift and a short weekend
/// shift in each region's own time zone.
fn rules_text() -> String {
    let mut text = String::from(
        "version = \"bench-week\"\noverlap_minutes = 30\n\n[routing]\nout_of_hours = \"next_on_shift\"\n\n",
    );
    for (index, (id, zone)) in REGIONS.iter().enumerate() {
        text.push_str(&format!(
            "[[regions]]\nid = \"{id}\"\nindex = {index}\ntime_zone = \"{zone}\"\nskills = [\"general\"]\ncapacity = 1000\npreference = 50\n\n\
             [[regions.shifts]]\nname = \"day\"\ndays = [\"mon-fri\"]\nstart = \"08:00\"\nend = \"17:00\"\nqueue_owner = \"{id}-lead\"\n\n\
             [[regions.shifts]]\nname = \"weekend\"\ndays = [\"sat\", \"sun\"]\nstart = \"10:00\"\nend = \"14:00\"\nqueue_owner = \"{id}-oncall\"\n\n"
        ));
    }
    text.push_str(
        "[tiers.standard]\ncalendar = \"24x7\"\nfirst_response_minutes = 60\nnext_response_minutes = 240\nresolution_minutes = 1440\npause_on = [\"pending\"]\n",
    );
    text
}

/// A deterministic generator: the same week every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

struct Gateway {
    client: TicketServiceClient<Channel>,
}

pub async fn run(
    sizes: &Sizes,
    progress: &Progress,
    report: &mut ScenarioReport,
) -> anyhow::Result<()> {
    // Tickets per simulated hour over the whole mesh, and how many
    // simulated hours a ticket stays open.
    let (days, per_hour) = if sizes.smoke { (1, 6) } else { (7, 30) };
    let open_hours = 4;
    let dir = tempfile::tempdir()?;
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules_text())?;
    let rules = Rules::parse("rules.toml", &rules_text()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<RegionId> = REGIONS
        .iter()
        .map(|(id, _)| RegionId::new(*id))
        .collect::<Result<_, _>>()?;
    let now = std::time::SystemTime::now();
    write_dev_pki(
        dir.path(),
        &DevPkiPlan {
            trust_domain: TrustDomain::new("meridian.bench")?,
            regions: names.clone(),
            services: vec![Service::Gateway],
            ca_validity: Validity::days_from(now, 30),
            cert_validity: Validity::days_from(now, 30),
            replace_ca: false,
        },
    )?;
    let clock = Arc::new(ManualClock::new(MONDAY.parse::<Timestamp>()?));

    progress.say("week: starting ten gateways");
    let mut bound = Vec::new();
    for name in &names {
        bound.push((
            name.clone(),
            TcpListener::bind("127.0.0.1:0").await?,
            TcpListener::bind("127.0.0.1:0").await?,
        ));
    }
    let mesh_addrs: BTreeMap<RegionId, String> = bound
        .iter()
        .map(|(r, _, m)| Ok((r.clone(), m.local_addr()?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut urls = BTreeMap::new();
    for (name, public, mesh) in bound {
        let public_addr = public.local_addr()?;
        let store = StoreConfig::sqlite_file(&dir.path().join(format!("{name}.db")));
        let mut config = GatewayConfig::new(name.clone(), names.clone(), public_addr, store);
        let mut settings = RulesSettings::new(rules_path.clone());
        settings.shift_check_interval = Duration::from_millis(10);
        settings.sla_scan_interval = Duration::from_millis(200);
        config.rules = Some(settings);
        config.mesh = Some(MeshSettings {
            listen: mesh.local_addr()?,
            tls: TlsFiles::dev(dir.path(), &name, Service::Gateway),
            peers: names
                .iter()
                .filter(|r| **r != name)
                .map(|r| (r.clone(), mesh_addrs[r].clone()))
                .collect(),
            handoff_timeout: Duration::from_secs(10),
            peer_durability_tiers: Vec::new(),
        });
        let mut stopped = stopped.clone();
        let gateway_clock: Arc<dyn Clock> = clock.clone();
        tasks.push(tokio::spawn(meridian_gateway::run_listeners(
            config,
            Listeners {
                public,
                mesh: Some(mesh),
            },
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
            gateway_clock,
        )));
        urls.insert(name, format!("http://{public_addr}"));
    }
    let mut gateways: HashMap<RegionId, Gateway> = HashMap::new();
    for (name, url) in &urls {
        let channel = connect(url).await?;
        let mut client = TicketServiceClient::new(channel);
        wait_connected(&mut client, names.len() - 1).await?;
        gateways.insert(name.clone(), Gateway { client });
    }

    let health: HashMap<RegionId, RegionHealth> = names
        .iter()
        .map(|r| (r.clone(), RegionHealth::Up))
        .collect();
    let load: HashMap<RegionId, RegionLoad> = HashMap::new();
    let request = RouteRequest {
        tier: Some(Tier::new("standard")?),
        skills: Vec::new(),
        residency: Vec::new(),
        priority: Priority::Normal,
        language: None,
    };
    let mut random = Lcg(42);
    // (step at which to solve, ticket id).
    let mut to_solve: VecDeque<(u64, String)> = VecDeque::new();
    let steps = (days * 24 * 60 / STEP_MINUTES) as u64;
    let per_step = per_hour as f64 * STEP_MINUTES as f64 / 60.0;
    let (mut created, mut solved, mut routed_to) = (0u64, 0u64, BTreeMap::<String, u64>::new());
    let started = Instant::now();
    for step in 0..steps {
        clock.advance(SignedDuration::from_mins(STEP_MINUTES));
        let at = clock.now();
        // Arrivals: `per_step` on average, jittered.
        let arrivals = (per_step * (0.5 + (random.next() % 1000) as f64 / 1000.0)).round() as u64;
        for _ in 0..arrivals {
            let decision = rules.decide(at, &health, &load, &request);
            let Some(region) = decision.region.cloned() else {
                continue;
            };
            let Some(gateway) = gateways.get_mut(&region) else {
                continue;
            };
            let ticket = gateway
                .client
                .create_ticket(v1::CreateTicketRequest {
                    subject: "Follow-the-sun".into(),
                    body: "simulated".into(),
                    customer: format!("customer-{}", random.next() % 500),
                    tier: "standard".into(),
                    skills: vec!["general".into()],
                    ..Default::default()
                })
                .await?
                .into_inner()
                .ticket
                .ok_or_else(|| anyhow::anyhow!("CreateTicket answered without a ticket"))?;
            let open_steps = (open_hours * 60 / STEP_MINUTES) as u64;
            to_solve.push_back((step + 1 + random.next() % (2 * open_steps), ticket.id));
            created += 1;
            *routed_to.entry(region.to_string()).or_default() += 1;
        }
        // Solutions, at whichever region owns the ticket now.
        let due: Vec<String> = {
            let mut due = Vec::new();
            to_solve.retain(|(when, id)| {
                let is_due = *when <= step;
                if is_due {
                    due.push(id.clone());
                }
                !is_due
            });
            due
        };
        for id in due {
            solved += u64::from(solve(&mut gateways, &names, &id).await?);
        }
        // Let the shift tasks see the new instant and hand off.
        tokio::time::sleep(Duration::from_millis(15)).await;
        if step % 36 == 0 {
            progress.say(&format!(
                "week: hour {} of {}, {created} tickets",
                step * STEP_MINUTES as u64 / 60,
                days * 24
            ));
        }
    }
    let week_s = started.elapsed().as_secs_f64();

    // Every region must agree on where every ticket is.
    progress.say("week: waiting for the mesh to converge");
    let (owners, handed_on) = converge(&mut gateways, &names, &routed_to).await?;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    report.row(Row::new(
        format!("simulated {days} day(s), ten regions: wall-clock time"),
        week_s,
        "s",
    ));
    report.row(Row::new(
        format!("  tickets created (routed by the rules) in {days} day(s)"),
        created as f64,
        "tickets",
    ));
    report.row(Row::new(
        "  tickets solved at their owner by then",
        solved as f64,
        "tickets",
    ));
    report.row(Row::new(
        "  tickets owned outside the region they were routed to",
        handed_on as f64,
        "tickets",
    ));
    report.notes.push(format!(
        "Simulated week: tickets routed per region {routed_to:?}; owned per region at the end {owners:?}. Each step is {STEP_MINUTES} simulated minutes with 15 ms of real time for the gateways' shift tasks, so about {:.0} s of the figure is that pause.",
        steps as f64 * 0.015
    ));
    anyhow::ensure!(created > 0, "the simulated week created no tickets");
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    for _ in 0..200 {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect()
            .await
        {
            return Ok(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("gateway at {url} never accepted a connection")
}

async fn wait_connected(
    client: &mut TicketServiceClient<Channel>,
    peers: usize,
) -> anyhow::Result<()> {
    for _ in 0..1000 {
        let status = client
            .get_status(v1::GetStatusRequest {})
            .await?
            .into_inner();
        if status.peers.len() == peers && status.peers.iter().all(|p| p.connected) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("replication streams never all connected")
}

/// Solves a ticket at its current owner; a handoff racing the call is
/// followed once. Returns whether it was solved.
async fn solve(
    gateways: &mut HashMap<RegionId, Gateway>,
    names: &[RegionId],
    id: &str,
) -> anyhow::Result<bool> {
    for _ in 0..3 {
        let Some(any) = gateways.get_mut(&names[0]) else {
            return Ok(false);
        };
        let Ok(found) = any
            .client
            .get_ticket(v1::GetTicketRequest {
                ticket_id: id.to_owned(),
            })
            .await
        else {
            // Not replicated to this region yet: try later.
            return Ok(false);
        };
        let owner = found
            .into_inner()
            .ticket
            .and_then(|t| t.owner)
            .map(|o| o.owner_region)
            .unwrap_or_default();
        let Some(gateway) = RegionId::new(&owner)
            .ok()
            .and_then(|r| gateways.get_mut(&r))
        else {
            return Ok(false);
        };
        for status in [v1::Status::Open, v1::Status::Solved] {
            let update = v1::UpdateTicketRequest {
                ticket_id: id.to_owned(),
                status: Some(status.into()),
                ..Default::default()
            };
            match gateway.client.update_ticket(update).await {
                Ok(_) => {}
                Err(e) if e.code() == Code::FailedPrecondition => break,
                Err(e) => return Err(e.into()),
            }
            if status == v1::Status::Solved {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Waits until every region sees the same owner for every ticket; returns
/// the tickets owned per region and how many moved from their first region.
async fn converge(
    gateways: &mut HashMap<RegionId, Gateway>,
    names: &[RegionId],
    routed_to: &BTreeMap<String, u64>,
) -> anyhow::Result<(BTreeMap<String, u64>, u64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut views = Vec::new();
        for name in names {
            let gateway = gateways
                .get_mut(name)
                .ok_or_else(|| anyhow::anyhow!("no gateway {name}"))?;
            let mut owners = BTreeMap::new();
            let mut token = String::new();
            loop {
                let page = gateway
                    .client
                    .list_tickets(v1::ListTicketsRequest {
                        page_size: 500,
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for ticket in page.tickets {
                    let owner = ticket.owner.map(|o| o.owner_region).unwrap_or_default();
                    owners.insert(ticket.id, owner);
                }
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            views.push(owners);
        }
        let total: u64 = routed_to.values().sum();
        if views.windows(2).all(|w| w[0] == w[1])
            && views.first().is_some_and(|v| v.len() as u64 == total)
        {
            let mut per_region = BTreeMap::new();
            for owner in views[0].values() {
                *per_region.entry(owner.clone()).or_insert(0u64) += 1;
            }
            // Tickets now owned somewhere other than where the rules sent
            // them: at least every handoff's worth.
            let moved = routed_to
                .iter()
                .map(|(r, n)| n.saturating_sub(per_region.get(r).copied().unwrap_or(0)))
                .sum();
            return Ok((per_region, moved));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the ten regions did not converge within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
