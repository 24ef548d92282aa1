//! A three-member etcd cluster on loopback loses the member the coordinator
//! talks to; leases keep working through the other two.

#[cfg(test)]
mod support;

#[cfg(test)]
mod cluster {
    use std::time::Duration;

    use meridian_coord::{Coordinator, EtcdConfig, EtcdCoordinator, LeaseState};

    use crate::support::{EtcdCluster, StateLog, etcd_config, region};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_survive_the_loss_of_the_member_in_use() {
        let Some(mut cluster) = EtcdCluster::start(3).await else {
            return;
        };
        // 4 s leases: a killed leader costs an election (up to two 500 ms
        // timeouts) before renewals get through again, and on a loaded
        // two-core machine (CI runs two test binaries at once) moving the
        // keep-alive stream has taken longer than a 2 s lease's margin.
        let config = EtcdConfig {
            safety_margin: Duration::from_millis(500),
            ..etcd_config(&cluster)
        };
        let coordinator = EtcdCoordinator::connect(config.clone()).await.unwrap();
        let router = EtcdCoordinator::connect(config).await.unwrap();
        let (us, eu) = (region("us-east"), region("eu-west"));
        let ttl = Duration::from_secs(4);
        let us_lease = coordinator.acquire_lease(&us, ttl).await.unwrap();
        let eu_lease = coordinator.acquire_lease(&eu, ttl).await.unwrap();
        let mut view = router.watch_regions().await.unwrap();
        let log = StateLog::follow(&us_lease);

        // Every client prefers the first endpoint until it fails.
        cluster.kill(0);
        // Watched for one and a half leases: past the point where a lease
        // that was not renewed through another member would have lapsed.
        for _ in 0..24 {
            tokio::time::sleep(ttl / 16).await;
            assert!(
                us_lease.may_write(),
                "fenced after losing one member of three: {:?}",
                us_lease.state()
            );
        }
        let states = log.states();
        assert!(states.iter().all(LeaseState::may_write), "{states:?}");
        // The keep-alive stream did break and moved to another member.
        assert!(
            states
                .iter()
                .any(|state| matches!(state, LeaseState::Renewing { .. })),
            "{states:?}"
        );
        let status = router.region_status(&us).await.unwrap();
        assert_eq!(status.lease.map(|live| live.lease_id), Some(us_lease.id()));

        // New leases, expiry, the router's watch and takeovers work too.
        let _ap_lease = coordinator
            .acquire_lease(&region("apac-south"), ttl)
            .await
            .unwrap();
        eu_lease.stop_renewing();
        // Leader changes extend leases by an election timeout, so allow for one.
        tokio::time::timeout(
            Duration::from_secs(10),
            view.wait_for(|view| view.connected && !view.status(&eu).is_live()),
        )
        .await
        .expect("the router sees eu-west's lease expire")
        .unwrap();
        let down = router.region_status(&eu).await.unwrap();
        let takeover = router
            .record_takeover(&eu, std::slice::from_ref(&us), down.revision)
            .await
            .unwrap();
        assert_eq!(router.takeover_of(&eu).await.unwrap(), Some(takeover));
    }
}
