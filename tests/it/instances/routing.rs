//! Any request on any instance: three instances on one PostgreSQL, requests
//! spread over them at random. Whichever instance a request reaches, the
//! target's owner serializes it, and the caller gets what one instance
//! would have answered: the deployment, a `reject` 409 naming the holder,
//! an idempotent repeat, the progress stream on the deploy call.

use crate::support::app::{TestApp, collect_events, deploy_request, sh_cluster, spawn_app_on};
use crate::support::pg::{TestDatabase, fresh_database};
use deployd::client::ClientError;
use deployd::config::{ClusterConfig, ConflictPolicy};
use deployd::machine::State;
use deployd::model::{DeployRequest, Deployment, EventData};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use uuid::Uuid;

/// Three instances on one database: the instances drop before it.
pub(super) struct Three {
    pub apps: Vec<TestApp>,
    _db: TestDatabase,
}

impl Three {
    pub async fn start(cluster: ClusterConfig) -> Three {
        let db = fresh_database().await;
        let mut apps = Vec::new();
        for _ in 0..3 {
            let cluster = cluster.clone();
            apps.push(
                spawn_app_on(db.url(), move |c| {
                    c.clusters.insert("fleet".into(), cluster);
                })
                .await,
            );
        }
        Three { apps, _db: db }
    }
}

/// Each step takes the target's guard directory in `guards` for its whole
/// run (a stopped step gives it back as it goes): a step that finds it
/// taken fails with "two steps at once". The activate step records the
/// version it put on the cluster.
pub(super) fn guarded_cluster(guards: &Path) -> ClusterConfig {
    let step = |name: &str, then: &str| {
        format!(
            "g='{dir}/'\"$DEPLOY_APP\"; \
             mkdir \"$g\" 2>/dev/null || {{ echo \"two steps at once on $DEPLOY_APP\" >&2; exit 97; }}; \
             trap 'rmdir \"$g\"; exit 143' TERM; \
             echo {name}; sleep 0.1; {then} rmdir \"$g\"",
            dir = guards.display()
        )
    };
    let record = format!(
        "echo \"$DEPLOY_VERSION\" > '{}/'\"$DEPLOY_APP\".live;",
        guards.display()
    );
    sh_cluster(
        Some(&step("build", "")),
        Some(&step("push", "")),
        Some(&step("activate", &record)),
    )
}

/// A small deterministic generator (xorshift64): the spread is random but
/// the same on every run.
struct Spread(u64);

impl Spread {
    fn below(&mut self, n: u64) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n) as usize
    }
}

/// Deploy `source` to web/fleet through `app`.
async fn send(
    app: &TestApp,
    source: &str,
    policy: ConflictPolicy,
    key: Option<String>,
) -> Result<Deployment, ClientError> {
    let request = request(source, policy, key);
    app.client.deploy("web", "fleet", &request).await
}

fn request(source: &str, policy: ConflictPolicy, key: Option<String>) -> DeployRequest {
    DeployRequest {
        on_conflict: Some(policy),
        idempotency_key: key,
        ..deploy_request(source)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_spread_over_three_instances_run_one_deployment_per_target_at_a_time() {
    let guards = tempfile::tempdir().unwrap();
    let fleet = Three::start(guarded_cluster(guards.path())).await;
    // Uploaded to one instance: the others fetch it when asked to deploy it.
    let source = fleet.apps[0].upload(&[("index.html", "hi", 0o644)]).await;
    let mut rng = Spread(0x5eed_1234_abcd_0042);
    let policies = [
        ConflictPolicy::Queue,
        ConflictPolicy::Reject,
        ConflictPolicy::Supersede,
    ];

    // 20 targets, three deploys each, every policy, sent at once to random
    // instances; half of them ask for the progress stream.
    let mut sends = Vec::new();
    for t in 0..20 {
        for (n, policy) in policies.iter().enumerate() {
            let app = &fleet.apps[rng.below(3)];
            let (client, source, policy) = (app.client.clone(), source.clone(), *policy);
            let streamed = rng.below(2) == 0;
            sends.push(tokio::spawn(async move {
                let target = format!("app{t}");
                let request = request(&source, policy, None);
                let answer = match streamed {
                    false => client.deploy(&target, "fleet", &request).await,
                    true => match client.deploy_stream(&target, "fleet", &request).await {
                        Ok(mut stream) => match stream.next().await {
                            Some(Ok(first)) => match first.data {
                                EventData::Deployment(d) => Ok(*d),
                                other => panic!("a stream starts with the deployment: {other:?}"),
                            },
                            other => panic!("the deploy stream's first event: {other:?}"),
                        },
                        Err(e) => Err(e),
                    },
                };
                (t, n, policy, answer)
            }));
        }
    }
    let mut created: Vec<Deployment> = Vec::new();
    for send in sends {
        let (t, n, policy, answer) = send.await.unwrap();
        match answer {
            Ok(d) => created.push(d),
            Err(ClientError::Api {
                status: 409,
                code,
                details,
                ..
            }) => {
                assert_eq!(
                    policy,
                    ConflictPolicy::Reject,
                    "app{t}#{n}: only reject refuses"
                );
                assert_eq!(code, "deploy_in_progress");
                let holder: Uuid = serde_json::from_value(details["deployment_id"].clone())
                    .expect("the 409 names the holder");
                let holder = fleet.apps[2]
                    .client
                    .get(holder)
                    .await
                    .expect("the holder exists");
                assert_eq!(holder.app, format!("app{t}"));
            }
            Err(e) => panic!("app{t}#{n} ({policy:?}): {e}"),
        }
    }
    assert!(
        created.len() >= 40,
        "queue and supersede always create: {}",
        created.len()
    );

    // Every deployment's stream, on every instance, is whole and the same.
    for d in &created {
        let mut streams = Vec::new();
        for app in &fleet.apps {
            streams.push(collect_events(&app.client, d.id, None).await);
        }
        let seqs: Vec<i64> = streams[0].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{}",
            d.id
        );
        assert!(streams[0].last().unwrap().1.is_final());
        assert_eq!(streams[0], streams[1], "{}: A and B differ", d.id);
        assert_eq!(streams[0], streams[2], "{}: A and C differ", d.id);
        for (_, event) in &streams[0] {
            if let EventData::State(s) = event {
                let error = s.error.clone().unwrap_or_default();
                assert!(!error.contains("two steps at once"), "{}: {error}", d.id);
            }
        }
    }

    // Each target ends idle, its cluster running the version the record says.
    let mut versions = BTreeSet::new();
    for t in 0..20 {
        let view = fleet.apps[1]
            .client
            .target(&format!("app{t}"), "fleet")
            .await
            .unwrap();
        assert!(
            view.running.is_none() && view.queued.is_empty(),
            "app{t}: {view:?}"
        );
        let active = view
            .active
            .expect("each target ends with an active version")
            .version;
        let live = std::fs::read_to_string(guards.path().join(format!("app{t}.live"))).unwrap();
        assert_eq!(
            live.trim(),
            active,
            "app{t}: the cluster runs what the record says"
        );
        versions.insert(active);
    }
    assert!(!versions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_answers_whichever_instance_a_request_reaches() {
    let guards = tempfile::tempdir().unwrap();
    let gate = guards.path().join("gate");
    let build = format!("while [ ! -e '{}' ]; do sleep 0.05; done", gate.display());
    let fleet = Three::start(sh_cluster(Some(&build), None, Some("true"))).await;
    let [a, b, c] = [&fleet.apps[0], &fleet.apps[1], &fleet.apps[2]];
    let source = a.upload(&[("index.html", "hi", 0o644)]).await;

    // The first deploy, through A, makes A the owner; its build waits.
    let first = send(a, &source, ConflictPolicy::Queue, None).await.unwrap();
    // Through B: queued behind it, with its position.
    let second = send(b, &source, ConflictPolicy::Queue, None).await.unwrap();
    assert_eq!(
        (second.state, second.queue_position),
        (State::Queued, Some(1))
    );
    // Through C with reject: the holder is named.
    let refused = send(c, &source, ConflictPolicy::Reject, None).await;
    match refused {
        Err(ClientError::Api {
            status: 409,
            details,
            ..
        }) => {
            assert_eq!(details["deployment_id"], serde_json::json!(first.id));
        }
        other => panic!("reject through another instance: {other:?}"),
    }
    // The same idempotency key through B then C: one deployment, the repeat 200.
    let key = Some("key-1".to_string());
    let keyed = (send(b, &source, ConflictPolicy::Queue, key.clone()).await).unwrap();
    let again = send(c, &source, ConflictPolicy::Queue, key).await.unwrap();
    assert_eq!(keyed.id, again.id);
    // Cancel through C the one B queued.
    let cancelled = c
        .client
        .cancel(second.id, Some("not needed".into()))
        .await
        .unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    // The instances list shows three, one of them owning the target.
    let listed = c.get_json("/v1/instances").await;
    let instances = listed["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{listed}");
    let owners: Vec<&serde_json::Value> = instances
        .iter()
        .filter(|i| {
            i["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["app"] == "web")
        })
        .collect();
    assert_eq!(owners.len(), 1, "one owner: {listed}");
    assert_eq!(owners[0]["address"].as_str().unwrap(), a.url);
    // /metrics on C has a series per instance: A owns the one target.
    let metrics = reqwest::get(format!("{}/metrics", c.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let a_id = owners[0]["id"].as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "deployd_instance_targets_owned{{instance=\"{a_id}\"}} 1"
        )),
        "{metrics}"
    );
    let ages = metrics
        .lines()
        .filter(|l| l.starts_with("deployd_instance_heartbeat_age_seconds{"))
        .count();
    assert_eq!(ages, 3, "{metrics}");
    // Only instances fetch sources from each other, with their peer key.
    let peer_url = format!("{}/v1/peers/sources/{source}", b.url);
    let anonymous = reqwest::get(&peer_url).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let this = listed["this"].as_str().unwrap();
    let forged = reqwest::Client::new()
        .get(&peer_url)
        .header("deployd-instance", this)
        .bearer_auth("0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "a made-up key opens nothing");
    // deployctl shows the same: three rows, the owner with the target.
    let shown = crate::cli::run(&c.url, &["instances"]).await;
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    let rows: Vec<&str> = shown.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{}", shown.stdout);
    let owner_row = rows.iter().find(|r| r.contains(&a.url)).expect("A's row");
    assert!(owner_row.ends_with("web/fleet"), "{owner_row}");
    assert!(
        rows.iter()
            .any(|r| r.contains(&c.url) && r.contains("(this)")),
        "{}",
        shown.stdout
    );
    std::fs::write(&gate, "").unwrap();
    for id in [first.id, keyed.id] {
        let events = collect_events(&c.client, id, None).await;
        assert!(events.last().unwrap().1.is_final());
    }
    let mut ends = BTreeMap::new();
    for id in [first.id, second.id, keyed.id] {
        ends.insert(id, a.client.get(id).await.unwrap().state);
    }
    assert_eq!(ends[&first.id], State::Succeeded);
    assert_eq!(ends[&second.id], State::Cancelled);
    assert_eq!(ends[&keyed.id], State::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_advertising_another_instances_address_is_not_answered_for() {
    let db = fresh_database().await;
    let cluster = sh_cluster(None, None, Some("true"));
    let start = |advertise: Option<String>| {
        let cluster = cluster.clone();
        spawn_app_on(db.url(), move |c| {
            c.clusters.insert("fleet".into(), cluster);
            c.server.advertise_url = advertise;
        })
    };
    let a = start(None).await;
    // D says it is reached at A's address: a mistake in its config.
    let d = start(Some(a.url.clone())).await;
    let source = d.upload(&[("index.html", "hi", 0o644)]).await;
    a.upload(&[("index.html", "hi", 0o644)]).await;
    let owned = send(&d, &source, ConflictPolicy::Queue, None)
        .await
        .unwrap();
    collect_events(&d.client, owned.id, None).await;
    // Through A, D's target is forwarded to "D" at A's address: A answers
    // as A, so the forwarder refuses the answer and says why.
    let refused = send(&a, &source, ConflictPolicy::Queue, None).await;
    match refused {
        Err(ClientError::Api {
            status: 503,
            message,
            ..
        }) => {
            assert!(message.contains("where instance"), "{message}");
        }
        other => panic!("an answer from the wrong instance: {other:?}"),
    }
    let history = a.client.history("web", &Default::default()).await.unwrap();
    assert_eq!(history.deployments.len(), 1, "nothing written through A");
    drop((a, d));
}
