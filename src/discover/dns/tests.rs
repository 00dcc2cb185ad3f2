use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

use super::*;

fn backends(ports: &[u16]) -> Vec<Backend> {
    ports
        .iter()
        .map(|p| format!("http://10.0.0.1:{p}").parse().unwrap())
        .collect()
}

type Asked = Arc<Mutex<Vec<Instant>>>;

/// A resolver that plays back a script and notes when it was asked.
fn scripted(
    script: Vec<Result<Answer, &'static str>>,
) -> (
    impl FnMut() -> BoxFuture<Result<Answer, BoxError>> + Send + 'static,
    Asked,
) {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&asked);
    let resolve = move || -> BoxFuture<Result<Answer, BoxError>> {
        noted.lock().unwrap().push(Instant::now());
        let next = script.lock().unwrap().pop_front();
        Box::pin(async move {
            match next {
                Some(Ok(answer)) => Ok(answer),
                Some(Err(why)) => Err(why.into()),
                // The script is over: a server that never answers.
                None => std::future::pending().await,
            }
        })
    };
    (resolve, asked)
}

fn summary(changes: &[Change<Address, Backend>]) -> Vec<String> {
    let mut out: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::Insert(a, b) => format!("+{} w{}", a.as_str(), b.weight()),
            Change::Remove(a) => format!("-{}", a.as_str()),
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn follows_ttls_within_bounds_keeps_the_last_answer_on_failure_and_empties_on_no_records() {
    let script = vec![
        Ok(Answer {
            backends: backends(&[1, 2]),
            ttl: 0,
        }),
        // TTL 0 is clamped up to the 1 s minimum; the same answer changes nothing.
        Ok(Answer {
            backends: backends(&[1, 2]),
            ttl: 3600,
        }),
        // (3600 s clamped to the 10 s maximum.)
        Err("timed out"),
        Err("timed out"),
        Ok(Answer {
            backends: backends(&[2, 3]),
            ttl: 5,
        }),
        Ok(Answer {
            backends: Vec::new(),
            ttl: 7,
        }),
    ];
    let (resolve, asked) = scripted(script);
    let bounds = (Duration::from_secs(1), Duration::from_secs(10));
    let mut poller = Poller::new(resolve, Arc::from("dns:test"), bounds);
    let start = Instant::now();

    let first = poller.next_changes().await;
    assert_eq!(
        summary(&first),
        ["+http://10.0.0.1:1 w1", "+http://10.0.0.1:2 w1"]
    );
    // The next change comes only after two failures: the failed lookups
    // left the set as it was.
    let second = poller.next_changes().await;
    assert_eq!(
        summary(&second),
        ["+http://10.0.0.1:3 w1", "-http://10.0.0.1:1"]
    );
    let third = poller.next_changes().await;
    assert_eq!(
        summary(&third),
        ["-http://10.0.0.1:2", "-http://10.0.0.1:3"]
    );

    let asked: Vec<Duration> = asked.lock().unwrap().iter().map(|t| *t - start).collect();
    let at: Vec<f64> = asked.iter().map(Duration::as_secs_f64).collect();
    assert_eq!(at.len(), 6);
    assert_eq!(at[0], 0.0, "looks up at once");
    assert_eq!(at[1], 1.0, "TTL 0 clamped to the minimum");
    assert_eq!(at[2], 11.0, "TTL 3600 clamped to the maximum");
    let first_backoff = at[3] - at[2];
    let second_backoff = at[4] - at[3];
    assert!((0.8..=1.2).contains(&first_backoff), "{at:?}");
    assert!(
        (1.6..=2.4).contains(&second_backoff),
        "back-off doubles: {at:?}"
    );
    assert_eq!(
        asked[5] - asked[4],
        Duration::from_secs(5),
        "a success resets to the TTL"
    );
}

fn service(priority: u16, weight: u16, target: &str) -> Service {
    Service {
        priority,
        weight,
        port: 80,
        target: Name::from_ascii(target).unwrap(),
        ttl: 30,
    }
}

#[test]
fn priorities_become_tiers_by_rank_and_the_no_service_target_is_skipped() {
    let records = [
        service(20, 1, "backup.test."),
        service(10, 5, "a.test."),
        service(10, 0, "b.test."),
        service(5, 1, "."),
        service(30, 1, "last.test."),
    ];
    let chosen: Vec<String> = tiered(&records)
        .iter()
        .map(|(s, tier)| format!("{} {} tier {tier}", s.target, s.weight))
        .collect();
    assert_eq!(
        chosen,
        [
            "backup.test. 1 tier 1",
            "a.test. 5 tier 0",
            "b.test. 0 tier 0",
            "last.test. 1 tier 2"
        ]
    );
    assert!(tiered(&[service(1, 1, ".")]).is_empty());
}

#[test]
fn labels_and_bad_names() {
    assert_eq!(Dns::a("web.test", 8000).label(), "dns:web.test:8000");
    assert_eq!(
        Dns::srv("_http._tcp.web.test").label(),
        "srv:_http._tcp.web.test"
    );
    let server = "127.0.0.1:53".parse().unwrap();
    let error = Dns::a("a..b", 80).server(server).discover().unwrap_err();
    assert!(error.to_string().contains("dns:a..b:80"), "{error}");
}
