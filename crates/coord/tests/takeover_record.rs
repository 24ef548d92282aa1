//! The takeover record as it sits in etcd: a router of this version writes
//! the successor list so that an older router still reads the primary, and
//! reads a record an older router wrote (no list) as a takeover by one
//! successor, which the returning region acknowledges as before. The raw
//! keys are written and read through etcd's own JSON gateway (`/v3/kv/*` on
//! the client port), not through the coordinator under test.

#[cfg(test)]
mod support;

#[cfg(test)]
mod record {
    use std::{
        io::{Read, Write},
        net::TcpStream,
        time::Duration,
    };

    use base64::{Engine, engine::general_purpose::STANDARD};
    use meridian_coord::{Coordinator, Error, EtcdCoordinator, KeyLayout, Revision};
    use serde_json::{Value, json};

    use crate::support::{EtcdCluster, etcd_config, region};

    /// One call to etcd's JSON gateway (HTTP/1.0: one response, then close).
    fn gateway(endpoint: &str, path: &str, body: &Value) -> Value {
        let address = endpoint.strip_prefix("http://").unwrap();
        let body = body.to_string();
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{path}: {response}"
        );
        serde_json::from_str(body).unwrap()
    }

    fn put_raw(endpoint: &str, key: &str, value: &str) {
        gateway(
            endpoint,
            "/v3/kv/put",
            &json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(value) }),
        );
    }

    fn get_raw(endpoint: &str, key: &str) -> Value {
        let answer = gateway(
            endpoint,
            "/v3/kv/range",
            &json!({ "key": STANDARD.encode(key) }),
        );
        let value = answer["kvs"][0]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is absent: {answer}"));
        serde_json::from_slice(&STANDARD.decode(value).unwrap()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_record_is_read_as_one_successor_and_a_new_one_keeps_the_primary_where_it_was()
    {
        let Some(cluster) = EtcdCluster::start(1).await else {
            return;
        };
        let endpoint = cluster.endpoints()[0].clone();
        let coordinator = EtcdCoordinator::connect(etcd_config(&cluster))
            .await
            .unwrap();
        let layout = KeyLayout::default();
        let (us, eu, ap) = (region("us-east"), region("eu-west"), region("apac-south"));

        // A record as routers wrote it before successor lists.
        put_raw(
            &endpoint,
            &layout.takeover_key(&us),
            r#"{"failed_region":"us-east","successor":"eu-west","recorded_at":"2027-01-15T08:00:00Z","nonce":"old-router"}"#,
        );
        let takeover = coordinator
            .takeover_of(&us)
            .await
            .unwrap()
            .expect("the older record is read");
        assert_eq!(
            (takeover.failed_region.clone(), takeover.successor.clone()),
            (us.clone(), eu.clone())
        );
        assert!(takeover.also.is_empty(), "{takeover:?}");
        assert_eq!(takeover.successors().count(), 1);
        assert!(takeover.fencing_token > Revision::ZERO);
        assert_eq!(
            coordinator
                .watch_regions()
                .await
                .unwrap()
                .borrow()
                .status(&us)
                .takeover,
            Some(takeover.clone())
        );
        // It holds the region back until acknowledged, as any takeover does.
        assert!(matches!(
            coordinator.acquire_lease(&us, Duration::from_secs(1)).await,
            Err(Error::TakenOver { .. })
        ));
        coordinator
            .acknowledge_takeover(&us, takeover.fencing_token)
            .await
            .unwrap();
        let status = coordinator.region_status(&us).await.unwrap();
        assert_eq!(
            (status.takeover, status.acknowledged),
            (None, Some(takeover.fencing_token))
        );

        // A new record: the list in order, the primary where older routers look.
        let us_lease = coordinator
            .acquire_lease(&us, Duration::from_secs(1))
            .await
            .unwrap();
        let _eu_lease = coordinator
            .acquire_lease(&eu, Duration::from_secs(1))
            .await
            .unwrap();
        let _ap_lease = coordinator
            .acquire_lease(&ap, Duration::from_secs(1))
            .await
            .unwrap();
        us_lease.release().await.unwrap();
        let down = coordinator.region_status(&us).await.unwrap();
        let recorded = coordinator
            .record_takeover(&us, &[ap.clone(), eu.clone()], down.revision)
            .await
            .unwrap();
        let raw = get_raw(&endpoint, &layout.takeover_key(&us));
        assert_eq!(raw["failed_region"], "us-east");
        assert_eq!(raw["successor"], "apac-south");
        assert_eq!(raw["also"], json!(["eu-west"]));
        let other_client = EtcdCoordinator::connect(etcd_config(&cluster))
            .await
            .unwrap();
        assert_eq!(other_client.takeover_of(&us).await.unwrap(), Some(recorded));
    }
}
