//! The coordinator conformance suite: every behaviour failover relies on,
//! run against the in-process coordinator (on a manual clock) and against a
//! real etcd started for the test. Test names say the backend:
//! `local::takeover_has_exactly_one_winner`, `etcd::takeover_has_exactly_one_winner`.
//!
//! Without an `etcd` binary the etcd cases print a loud SKIPPED line; with
//! `MERIDIAN_REQUIRE_ALL=1` they fail instead.

#[cfg(test)]
mod support;

#[cfg(test)]
mod suite {
    use std::time::Duration;

    use meridian_coord::{Error, LeaseState, Revision};

    use crate::support::{Harness, StateLog, region, wait_for_status};

    /// A lease with keep-alive stays held, and writable, across four ttls.
    pub async fn lease_is_kept_alive_past_several_ttls(h: &impl Harness) {
        let us = region("us-east");
        let lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        assert!(
            lease.ttl() >= h.ttl(),
            "granted {:?} < asked {:?}",
            lease.ttl(),
            h.ttl()
        );
        let log = StateLog::follow(&lease);
        for _ in 0..16 {
            h.pass(h.ttl() / 4).await;
            assert!(
                lease.may_write(),
                "fenced while renewing: {:?}",
                lease.state()
            );
        }
        assert!(
            matches!(lease.state(), LeaseState::Held { .. }),
            "{:?}",
            lease.state()
        );
        let never_fenced = log.states().iter().all(LeaseState::may_write);
        assert!(
            never_fenced,
            "a healthy lease left Held/Renewing: {:?}",
            log.states()
        );
        let status = h.peer().region_status(&us).await.unwrap();
        assert_eq!(status.lease.map(|live| live.lease_id), Some(lease.id()));
    }

    /// One live lease per region; releasing it frees the region at once.
    pub async fn a_region_has_one_lease_and_release_frees_it(h: &impl Harness) {
        let us = region("us-east");
        let lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        match h.peer().acquire_lease(&us, h.ttl()).await {
            Err(Error::LeaseHeld { region, lease_id }) => {
                assert_eq!(region, us);
                assert_eq!(lease_id, lease.id());
            }
            other => panic!("a second lease on {us} was not refused: {other:?}"),
        }
        let watching = lease.subscribe();
        lease.release().await.unwrap();
        assert_eq!(*watching.borrow(), LeaseState::Lost);
        assert!(!h.peer().region_status(&us).await.unwrap().is_live());
        let again = h.peer().acquire_lease(&us, h.ttl()).await.unwrap();
        assert!(again.may_write());
    }

    /// A killed region fences itself before its lease can expire, and a
    /// watcher sees the lease expire within ttl + slack of the kill.
    pub async fn a_killed_region_fences_before_watchers_see_it_expire(h: &impl Harness) {
        let us = region("us-east");
        let mut view = h.peer().watch_regions().await.unwrap();
        let lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        let log = StateLog::follow(&lease);
        wait_for_status(h, &us, h.ttl(), |status| status.is_live()).await;
        tokio::time::timeout(
            Duration::from_secs(5),
            view.wait_for(|view| view.status(&us).is_live()),
        )
        .await
        .expect("the watch shows the new lease")
        .unwrap();
        h.pass(h.ttl() / 2).await;

        h.kill(&lease);
        let killed_at = h.elapsed();
        let mut fenced_at = None;
        let expired_at = loop {
            if fenced_at.is_none() && !lease.may_write() {
                fenced_at = Some(h.elapsed());
                // Fenced, yet the store still holds the lease: the fence came first.
                let status = h.peer().region_status(&us).await.unwrap();
                assert!(
                    status.is_live(),
                    "lease expired before its holder fenced: {status:?}"
                );
                assert!(
                    view.borrow().status(&us).is_live(),
                    "watcher saw expiry before the holder fenced"
                );
            }
            if !view.borrow().status(&us).is_live() {
                break h.elapsed();
            }
            assert!(
                h.elapsed() - killed_at <= h.ttl() + h.expiry_slack(),
                "no expiry seen {:?} after the kill",
                h.elapsed() - killed_at
            );
            h.pass(Duration::from_millis(10)).await;
        };
        let fenced_at = fenced_at.expect("the holder fenced before expiry was seen");
        assert!(fenced_at < expired_at);
        assert!(
            fenced_at - killed_at <= h.ttl() - h.safety_margin() + Duration::from_millis(100),
            "fenced {:?} after the kill, later than ttl - margin",
            fenced_at - killed_at
        );

        // The holder learns that the lease is gone.
        let deadline = h.elapsed() + h.ttl() + h.expiry_slack();
        while lease.state() != LeaseState::Lost {
            assert!(
                h.elapsed() < deadline,
                "holder never saw its lease lost: {:?}",
                lease.state()
            );
            h.pass(Duration::from_millis(20)).await;
        }
        let states = log.states();
        let fenced = states
            .iter()
            .position(|state| matches!(state, LeaseState::Fenced { .. }));
        let lost = states.iter().position(|state| *state == LeaseState::Lost);
        assert!(
            fenced.is_some() && fenced < lost,
            "expected Fenced before Lost: {states:?}"
        );
    }

    /// Of two routers taking over the same region at once, exactly one wins,
    /// with a fencing token greater than any before.
    pub async fn takeover_has_exactly_one_winner(h: &impl Harness) {
        let (us, eu, ap, sa) = (
            region("us-east"),
            region("eu-west"),
            region("apac-south"),
            region("sa-east"),
        );
        let us_lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        let _eu_lease = h.coordinator().acquire_lease(&eu, h.ttl()).await.unwrap();
        let _ap_lease = h.coordinator().acquire_lease(&ap, h.ttl()).await.unwrap();
        let sa_lease = h.coordinator().acquire_lease(&sa, h.ttl()).await.unwrap();

        // An earlier takeover, to compare tokens with.
        h.kill(&sa_lease);
        h.kill(&us_lease);
        let within = h.ttl() + h.expiry_slack() + Duration::from_millis(200);
        let (sa_down, _) = wait_for_status(h, &sa, within, |status| !status.is_live()).await;
        let earlier = h
            .coordinator()
            .record_takeover(&sa, std::slice::from_ref(&eu), sa_down.revision)
            .await
            .unwrap();
        assert_eq!(
            (earlier.failed_region.clone(), earlier.successor.clone()),
            (sa.clone(), eu.clone())
        );

        let (us_down, _) = wait_for_status(h, &us, within, |status| !status.is_live()).await;
        let (by_eu, by_ap) = ([eu.clone()], [ap.clone()]);
        let (first, second) = tokio::join!(
            h.coordinator()
                .record_takeover(&us, &by_eu, us_down.revision),
            h.peer().record_takeover(&us, &by_ap, us_down.revision),
        );
        let (winner, loser) = match (first, second) {
            (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
            (first, second) => panic!("expected exactly one winner, got {first:?} and {second:?}"),
        };
        match loser {
            Error::TakenOver { takeover } => assert_eq!(takeover, winner),
            other => panic!("the loser should learn who won, got {other}"),
        }
        assert!(
            winner.fencing_token > earlier.fencing_token,
            "{winner:?} after {earlier:?}"
        );
        assert!(winner.fencing_token > us_down.revision);

        // Later attempts on either region fail: the takeovers await acknowledgement.
        let now = h.peer().region_status(&us).await.unwrap();
        assert!(matches!(
            h.peer().record_takeover(&us, std::slice::from_ref(&ap), now.revision).await,
            Err(Error::TakenOver { takeover }) if takeover == winner
        ));
        assert_eq!(h.peer().takeover_of(&us).await.unwrap(), Some(winner));
        assert_eq!(h.peer().takeover_of(&sa).await.unwrap(), Some(earlier));
    }

    /// A takeover needs a dead region, a live successor and a current view.
    pub async fn takeover_requires_a_dead_region_and_a_live_successor(h: &impl Harness) {
        let (us, eu) = (region("us-east"), region("eu-west"));
        let us_lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        let eu_lease = h.coordinator().acquire_lease(&eu, h.ttl()).await.unwrap();
        let status = h.coordinator().region_status(&us).await.unwrap();
        match h
            .coordinator()
            .record_takeover(&us, std::slice::from_ref(&eu), status.revision)
            .await
        {
            Err(Error::RegionAlive { region, lease_id }) => {
                assert_eq!(region, us);
                assert_eq!(lease_id, us_lease.id());
            }
            other => panic!("took over a live region: {other:?}"),
        }
        us_lease.release().await.unwrap();
        eu_lease.release().await.unwrap();
        let status = h.coordinator().region_status(&us).await.unwrap();
        assert!(matches!(
            h.coordinator()
                .record_takeover(&us, std::slice::from_ref(&eu), status.revision)
                .await,
            Err(Error::SuccessorNotLive { .. })
        ));
        assert!(matches!(
            h.coordinator()
                .record_takeover(&us, std::slice::from_ref(&us), status.revision)
                .await,
            Err(Error::Invalid {
                field: "successor",
                ..
            })
        ));
        let _eu_lease = h.coordinator().acquire_lease(&eu, h.ttl()).await.unwrap();
        let takeover = h
            .coordinator()
            .record_takeover(&us, std::slice::from_ref(&eu), status.revision)
            .await
            .unwrap();
        assert!(takeover.fencing_token > status.revision);
    }

    /// A takeover names an ordered list of live successors, read back the
    /// same by another client; a list with a dead region, a repeat, the
    /// failed region or nobody is refused.
    pub async fn a_takeover_names_its_successors_in_order(h: &impl Harness) {
        let (us, eu, ap, sa) = (
            region("us-east"),
            region("eu-west"),
            region("apac-south"),
            region("sa-east"),
        );
        let us_lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        let _eu_lease = h.coordinator().acquire_lease(&eu, h.ttl()).await.unwrap();
        let _ap_lease = h.coordinator().acquire_lease(&ap, h.ttl()).await.unwrap();
        h.kill(&us_lease);
        let within = h.ttl() + h.expiry_slack() + Duration::from_millis(200);
        let (down, _) = wait_for_status(h, &us, within, |status| !status.is_live()).await;
        for (successors, field) in [
            (vec![], "successors"),
            (vec![ap.clone(), ap.clone()], "successors"),
            (vec![ap.clone(), us.clone()], "successor"),
        ] {
            match h
                .coordinator()
                .record_takeover(&us, &successors, down.revision)
                .await
            {
                Err(Error::Invalid { field: found, .. }) => {
                    assert_eq!(found, field, "{successors:?}")
                }
                other => panic!("{successors:?} was not refused: {other:?}"),
            }
        }
        // sa-east never leased: naming it anywhere in the list is refused.
        match h
            .coordinator()
            .record_takeover(&us, &[ap.clone(), sa.clone()], down.revision)
            .await
        {
            Err(Error::SuccessorNotLive { successor, .. }) => assert_eq!(successor, sa),
            other => panic!("a dead successor was listed: {other:?}"),
        }
        let takeover = h
            .coordinator()
            .record_takeover(&us, &[ap.clone(), eu.clone()], down.revision)
            .await
            .unwrap();
        assert_eq!(takeover.successor, ap);
        assert_eq!(takeover.also, std::slice::from_ref(&eu));
        assert_eq!(
            takeover.successors().cloned().collect::<Vec<_>>(),
            [ap.clone(), eu.clone()]
        );
        assert_eq!(
            h.peer().takeover_of(&us).await.unwrap(),
            Some(takeover.clone())
        );
        assert_eq!(
            h.peer().region_status(&us).await.unwrap().takeover,
            Some(takeover.clone())
        );
        match h
            .peer()
            .record_takeover(&us, std::slice::from_ref(&eu), down.revision)
            .await
        {
            Err(Error::TakenOver { takeover: found }) => assert_eq!(found, takeover),
            other => panic!("a second takeover was recorded: {other:?}"),
        }
        h.peer()
            .acknowledge_takeover(&us, takeover.fencing_token)
            .await
            .unwrap();
        assert_eq!(
            h.peer().region_status(&us).await.unwrap().acknowledged,
            Some(takeover.fencing_token)
        );
    }

    /// A returning region reads the takeover, cannot take its lease until it
    /// acknowledges it, and a router deciding on a view from before the
    /// acknowledgement cannot take it over again.
    pub async fn a_returning_region_reads_and_acknowledges_its_takeover(h: &impl Harness) {
        let (us, eu) = (region("us-east"), region("eu-west"));
        let us_lease = h.coordinator().acquire_lease(&us, h.ttl()).await.unwrap();
        let _eu_lease = h.coordinator().acquire_lease(&eu, h.ttl()).await.unwrap();
        h.kill(&us_lease);
        let within = h.ttl() + h.expiry_slack() + Duration::from_millis(200);
        let (down, _) = wait_for_status(h, &us, within, |status| !status.is_live()).await;
        let takeover = h
            .coordinator()
            .record_takeover(&us, std::slice::from_ref(&eu), down.revision)
            .await
            .unwrap();
        drop(us_lease);

        // The returning region (another process: the peer client) learns it.
        assert_eq!(
            h.peer().takeover_of(&us).await.unwrap(),
            Some(takeover.clone())
        );
        match h.peer().acquire_lease(&us, h.ttl()).await {
            Err(Error::TakenOver { takeover: found }) => assert_eq!(found, takeover),
            other => panic!("a taken-over region got its lease back unacknowledged: {other:?}"),
        }
        let wrong = Revision::new(takeover.fencing_token.get() + 1);
        assert!(matches!(
            h.peer().acknowledge_takeover(&us, wrong).await,
            Err(Error::NoSuchTakeover { pending: Some(pending), .. }) if pending == takeover.fencing_token
        ));

        let before_ack = h.coordinator().region_status(&us).await.unwrap();
        h.peer()
            .acknowledge_takeover(&us, takeover.fencing_token)
            .await
            .unwrap();
        h.peer()
            .acknowledge_takeover(&us, takeover.fencing_token)
            .await
            .unwrap();
        let status = h.peer().region_status(&us).await.unwrap();
        assert_eq!(status.takeover, None);
        assert_eq!(status.acknowledged, Some(takeover.fencing_token));

        // A router still deciding on the view from before the acknowledgement is refused.
        match h
            .coordinator()
            .record_takeover(&us, std::slice::from_ref(&eu), before_ack.revision)
            .await
        {
            Err(Error::StaleObservation {
                acknowledged_at, ..
            }) => assert!(acknowledged_at > before_ack.revision),
            other => panic!("a stale view took the region over again: {other:?}"),
        }
        let back = h.peer().acquire_lease(&us, h.ttl()).await.unwrap();
        assert!(back.may_write());
        assert_eq!(h.peer().takeover_of(&us).await.unwrap(), None);
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        #[cfg(test)]
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    let harness = crate::support::LocalHarness::new();
                    crate::suite::$case(&harness).await;
                }
            )*
        }

        #[cfg(test)]
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = crate::support::EtcdHarness::start().await else { return };
                    crate::suite::$case(&harness).await;
                }
            )*
        }
    };
}

conformance!(
    lease_is_kept_alive_past_several_ttls,
    a_region_has_one_lease_and_release_frees_it,
    a_killed_region_fences_before_watchers_see_it_expire,
    takeover_has_exactly_one_winner,
    takeover_requires_a_dead_region_and_a_live_successor,
    a_returning_region_reads_and_acknowledges_its_takeover,
    a_takeover_names_its_successors_in_order,
);
