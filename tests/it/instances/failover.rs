//! Instances that die, pause or restart while they own targets: the real
//! binary, real signals. Another instance takes the target within a lease,
//! restores the cluster where an activation was cut, and a former owner that
//! comes back writes nothing (its writes carry an epoch that was fenced).

use crate::support::app::*;
use crate::support::pg::{TestDatabase, fresh_database};
use crate::support::process::{Daemon, write_config};
use deployd::client::Client;
use deployd::machine::State;
use deployd::model::{DeployRequest, Deployment, EventData};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lease the instances here run with.
const LEASE: Duration = Duration::from_secs(3);

/// A cluster outside every data dir: `current` names the release live on it.
/// The build waits while `<cluster>/hold-build` exists; the activate step
/// switches `current`, then waits while `<cluster>/hold-activate` exists
/// (a restore never waits).
fn cluster_toml(cluster: &Path) -> String {
    let c = cluster.display();
    let build = format!(
        r#"echo "$$" > "{c}/build-$DEPLOY_ID.pid"; echo building
while [ -e "{c}/hold-build" ]; do sleep 0.05; done
release="{c}/releases/$DEPLOY_ID"; mkdir -p "$release"
cp -R "$DEPLOY_SOURCE_DIR/." "$release/"; printf '%s' "$release" > "$DEPLOY_ARTIFACT_FILE""#
    );
    let activate = format!(
        r#"if [ -z "${{DEPLOY_ARTIFACT:-}}" ]; then rm -f "{c}/current"; exit 0; fi
ln -sfn "$DEPLOY_ARTIFACT" "{c}/.current.$$"; mv -fT "{c}/.current.$$" "{c}/current"
echo "current -> $DEPLOY_VERSION"
if [ "${{DEPLOY_RESTORE:-}}" = 1 ]; then sleep 2; exit 0; fi
echo switched > "{c}/switched-$DEPLOY_ID"
while [ -e "{c}/hold-activate" ]; do echo tick; sleep 0.1; done"#
    );
    let argv = |script: String| serde_json::json!(["/bin/sh", "-eu", "-c", script]);
    format!(
        "[deploy]\nlease = \"{}s\"\nkill_grace = \"1s\"\n\n\
         [clusters.fleet.build]\nrun = {}\ntimeout = \"2m\"\n\n\
         [clusters.fleet.activate]\nrun = {}\ntimeout = \"2m\"\n",
        LEASE.as_secs(),
        argv(build),
        argv(activate)
    )
}

/// Instances on one database, each with its own home (data dir, config),
/// and the cluster they all deploy to.
struct Fleet {
    dir: tempfile::TempDir,
    db: TestDatabase,
}

impl Fleet {
    async fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cluster/releases")).unwrap();
        Fleet {
            dir,
            db: fresh_database().await,
        }
    }

    fn cluster(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// The config of instance `name` (its own data dir).
    fn config(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        write_config(&home, Some(self.db.url()), &cluster_toml(&self.cluster()))
    }

    /// [`Fleet::config`] with a lease of `lease` (TOML, e.g. `"60s"`)
    /// instead of [`LEASE`].
    fn config_with_lease(&self, name: &str, lease: &str) -> PathBuf {
        let config = self.config(name);
        let ours = format!("lease = \"{}s\"", LEASE.as_secs());
        let toml = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            toml.replace(&ours, &format!("lease = \"{lease}\"")),
        )
        .unwrap();
        config
    }

    async fn start(&self, name: &str) -> Daemon {
        Daemon::start(&self.config(name)).await
    }

    fn hold(&self, what: &str, held: bool) {
        let path = self.cluster().join(format!("hold-{what}"));
        match held {
            true => std::fs::write(path, "").unwrap(),
            false => drop(std::fs::remove_file(path)),
        }
    }

    /// The file name of the release `current` points at (None: nothing live).
    fn live(&self) -> Option<String> {
        let target = std::fs::read_link(self.cluster().join("current")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }
}

async fn deploy(client: &Client, tag: &str) -> Deployment {
    let bytes = tar_of(&[("index.html", tag, 0o644)]);
    let sha = sha256_hex(&bytes);
    client.put_source(&sha, bytes).await.expect("upload");
    client
        .deploy("web", "fleet", &deploy_request(&sha))
        .await
        .expect("deploy accepted")
}

async fn finished(client: &Client, id: uuid::Uuid) -> Vec<(i64, EventData)> {
    collect_events(client, id, None).await
}

fn end(events: &[(i64, EventData)]) -> (State, String) {
    match &events.last().expect("events").1 {
        EventData::State(s) => (s.to, s.error.clone().unwrap_or_default()),
        other => panic!("a state event last: {other:?}"),
    }
}

/// The instance id `/v1/supervisor` names.
async fn instance_of(client: &Client) -> String {
    let url = format!("{}/v1/supervisor", client.base_url().trim_end_matches('/'));
    let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["instance"]
        .as_str()
        .expect("the supervisor names its instance")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_mid_build_is_replaced_within_a_lease_and_the_cluster_matches() {
    let fleet = Fleet::new().await;
    let a = fleet.start("a").await;
    let b = fleet.start("b").await;
    let v1 = deploy(&a.client, "one").await;
    assert_eq!(end(&finished(&a.client, v1.id).await).0, State::Succeeded);

    fleet.hold("build", true);
    let d = deploy(&a.client, "two").await;
    let pid_file = fleet.cluster().join(format!("build-{}.pid", d.id));
    eventually("the build to start on A", || pid_file.exists()).await;
    let step: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let a_id = instance_of(&a.client).await;
    let killed_at = Instant::now();
    a.kill9();

    let events = finished(&b.client, d.id).await;
    let freed_after = killed_at.elapsed();
    let (state, error) = end(&events);
    assert_eq!(state, State::Interrupted);
    assert_eq!(
        error,
        format!("interrupted during building: instance {a_id} stopped renewing its lease")
    );
    // One lease, the reaper's tick (a third of it), and time to run: well
    // under three leases. (How fast is a benchmark's business.)
    assert!(freed_after < LEASE * 3, "freed after {freed_after:?}");
    assert!(!alive(step), "the dead owner's build step is gone");
    // The record and the cluster agree: v1, and a new deploy through B runs.
    let view = b.client.target("web", "fleet").await.unwrap();
    assert_eq!(view.active.map(|a| a.version).as_deref(), Some("v1"));
    assert_eq!(fleet.live(), Some(v1.id.to_string()));
    fleet.hold("build", false);
    let next = deploy(&b.client, "three").await;
    assert_eq!(end(&finished(&b.client, next.id).await).0, State::Succeeded);
    assert_eq!(fleet.live(), Some(next.id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_writes_nothing_once_another_took_over() {
    let fleet = Fleet::new().await;
    let a = fleet.start("a").await;
    let b = fleet.start("b").await;
    let v1 = deploy(&a.client, "one").await;
    assert_eq!(end(&finished(&a.client, v1.id).await).0, State::Succeeded);

    // v2's activation switches the cluster on A, then waits.
    fleet.hold("activate", true);
    let v2 = deploy(&a.client, "two").await;
    let switched = fleet.cluster().join(format!("switched-{}", v2.id));
    eventually("A's activate step to switch", || switched.exists()).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(a.pid(), libc::SIGSTOP) };

    // B takes the target over once A's lease lapsed, and restores v1; its
    // restore takes 2 s, during which the deployment is still activating.
    let b_took_over = |events: &[(i64, EventData)]| {
        events.iter().any(
            |(_, e)| matches!(e, EventData::Log(l) if l.line.contains("took the deployment over")),
        )
    };
    let mut seen = Vec::new();
    eventually_async("B to take the activation over", || {
        let client = b.client.clone();
        let id = v2.id;
        async move {
            let mut stream = client.events(id, None).await.unwrap();
            let mut events = Vec::new();
            let read = async {
                use futures::StreamExt;
                while let Some(Ok(event)) = stream.next().await {
                    events.push((event.seq.unwrap(), event.data));
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(300), read).await;
            b_took_over(&events)
        }
    })
    .await;
    // A wakes while B restores: its step was killed by B's take-over, and
    // whatever A's actor now tries (a note, a restore, an end) is fenced.
    // SAFETY: as above.
    unsafe { libc::kill(a.pid(), libc::SIGCONT) };
    fleet.hold("activate", false);

    let events = finished(&b.client, v2.id).await;
    let (state, error) = end(&events);
    assert_eq!(state, State::Interrupted, "{error}");
    assert!(error.ends_with("restored v1 on the cluster"), "{error}");
    let restoring = events
        .iter()
        .filter(|(_, e)| matches!(e, EventData::Log(l) if l.line.contains("restoring v1")))
        .count();
    assert_eq!(restoring, 1, "only B restored: {events:?}");
    seen.extend(events);
    // Nothing lands after the final state, and A's late writes never did.
    tokio::time::sleep(LEASE).await;
    let again = finished(&b.client, v2.id).await;
    assert_eq!(again, seen, "nothing was written after");
    let view = b.client.target("web", "fleet").await.unwrap();
    assert_eq!(view.active.map(|a| a.version).as_deref(), Some("v1"));
    assert_eq!(fleet.live(), Some(v1.id.to_string()), "the cluster runs v1");
    // A is alive and serves: a deploy through it reaches the owner, B.
    let v3 = deploy(&a.client, "three").await;
    assert_eq!(end(&finished(&a.client, v3.id).await).0, State::Succeeded);
    assert_eq!(fleet.live(), Some(v3.id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_instances_loses_no_deployment() {
    let fleet = Fleet::new().await;
    let configs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| fleet.config(n)).collect();
    let ports: Vec<u16> = (0..3)
        .map(|_| crate::support::process::free_port())
        .collect();
    let mut daemons = Vec::new();
    for (config, port) in configs.iter().zip(&ports) {
        daemons.push(Daemon::start_on(config, *port).await);
    }
    let bytes = tar_of(&[("index.html", "x", 0o644)]);
    let sha = sha256_hex(&bytes);
    daemons[0].client.put_source(&sha, bytes).await.unwrap();
    // Deploys keep coming, through every instance in turn, while each
    // instance in turn is stopped (SIGTERM) and started again on its port.
    let clients: Vec<Client> = daemons.iter().map(|d| d.client.clone()).collect();
    let done = tokio_util::sync::CancellationToken::new();
    let sender = tokio::spawn({
        let done = done.clone();
        async move {
            let mut accepted = Vec::new();
            let mut refused = 0;
            let mut n = 0usize;
            while !done.is_cancelled() {
                n += 1;
                let app = format!("app{}", n % 5);
                match clients[n % 3]
                    .deploy(&app, "fleet", &deploy_request(&sha))
                    .await
                {
                    Ok(d) => accepted.push(d),
                    // The instance is restarting, or the owner is handing over.
                    Err(e) if e.is_transient() => refused += 1,
                    Err(e) => panic!("deploy through an instance: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (accepted, refused)
        }
    });
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let stopping = daemons.remove(i);
        assert!(stopping.terminate().await.success(), "exits 0 on SIGTERM");
        daemons.insert(i, Daemon::start_on(&configs[i], ports[i]).await);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    done.cancel();
    let (accepted, refused) = sender.await.unwrap();
    assert!(
        accepted.len() >= 20,
        "{} accepted, {refused} refused",
        accepted.len()
    );
    // Every accepted deployment ends, on record, and none is left waiting.
    let client = daemons[0].client.clone();
    for d in &accepted {
        let (state, error) = end(&finished(&client, d.id).await);
        assert!(
            matches!(
                state,
                State::Succeeded | State::Interrupted | State::Cancelled
            ),
            "{}: {state} {error}",
            d.id
        );
    }
    for app in 0..5 {
        let app = format!("app{app}");
        eventually_async("every target's queue to drain", || {
            let client = client.clone();
            let app = app.clone();
            async move {
                let view = client.target(&app, "fleet").await.unwrap();
                view.running.is_none() && view.queued.is_empty()
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None, "");
    let _first = Daemon::start(&config).await;
    let output = crate::support::process::serve_command(&config, "127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run a second deployd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another deployd (pid ") && stderr.contains("serves the data dir"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PostgreSQL"),
        "says how to run several: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_deployment_taken_over_fetches_its_source_from_a_live_instance() {
    let fleet = Fleet::new().await;
    let a = fleet.start("a").await;
    let b = fleet.start("b").await;
    // C holds the source; a long lease keeps it listed as live while it is
    // paused below, so that B, not C, takes A's target.
    let c = Daemon::start(&fleet.config_with_lease("c", "60s")).await;
    let bytes = tar_of(&[("index.html", "queued", 0o644)]);
    let sha = sha256_hex(&bytes);
    c.client.put_source(&sha, bytes).await.unwrap();

    fleet.hold("build", true);
    let running = deploy(&a.client, "running").await;
    let pid_file = fleet.cluster().join(format!("build-{}.pid", running.id));
    eventually("the build to start on A", || pid_file.exists()).await;
    let request = DeployRequest {
        on_conflict: Some(deployd::model::ConflictPolicy::Queue),
        ..deploy_request(&sha)
    };
    // A fetches the source from C to accept this; B never had it.
    let queued = a.client.deploy("web", "fleet", &request).await.unwrap();
    assert_eq!(queued.state, State::Queued);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.pid(), libc::SIGSTOP) };
    a.kill9();
    fleet.hold("build", false);
    let (state, _) = end(&finished(&b.client, running.id).await);
    assert_eq!(state, State::Interrupted, "B took A's target over");
    // SAFETY: as above.
    unsafe { libc::kill(c.pid(), libc::SIGCONT) };

    let (state, error) = end(&finished(&b.client, queued.id).await);
    assert_eq!(state, State::Succeeded, "{error}");
    assert_eq!(fleet.live(), Some(queued.id.to_string()));
    let fetched = fleet.dir.path().join(format!("b/data/sources/{sha}.tar"));
    assert!(fetched.exists(), "B fetched the source from C to build it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_targets_over_at_once_not_after_a_lease() {
    let fleet = Fleet::new().await;
    let a = Daemon::start(&fleet.config_with_lease("a", "60s")).await;
    let b = Daemon::start(&fleet.config_with_lease("b", "60s")).await;
    fleet.hold("build", true);
    let running = deploy(&a.client, "running").await;
    let pid_file = fleet.cluster().join(format!("build-{}.pid", running.id));
    eventually("the build to start on A", || pid_file.exists()).await;
    let bytes = tar_of(&[("index.html", "next", 0o644)]);
    let sha = sha256_hex(&bytes);
    a.client.put_source(&sha, bytes).await.unwrap();
    let request = DeployRequest {
        on_conflict: Some(deployd::model::ConflictPolicy::Queue),
        ..deploy_request(&sha)
    };
    let queued = b.client.deploy("web", "fleet", &request).await.unwrap();
    assert_eq!(queued.state, State::Queued, "forwarded to A, queued there");
    // A stops with its build still held: interrupted at shutdown, after
    // the grace; the queued deployment waits for the next owner.
    let stopped_at = Instant::now();
    assert!(a.terminate().await.success());
    fleet.hold("build", false);
    let (state, error) = end(&finished(&b.client, queued.id).await);
    let taken_after = stopped_at.elapsed();
    assert_eq!(state, State::Succeeded, "{error}");
    // The grace (1 s), a heartbeat of B's (at most 2 s) and the deploy: far
    // from the 60 s lease, and from the 20 s a heartbeat at lease / 3 takes.
    assert!(
        taken_after < Duration::from_secs(10),
        "B ran A's queue {taken_after:?} after A stopped"
    );
    let (state, error) = end(&finished(&b.client, running.id).await);
    assert_eq!(
        (state, error.contains("shut down")),
        (State::Interrupted, true),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_by_a_paused_owner_is_refused_once_another_took_over() {
    let fleet = Fleet::new().await;
    let a = fleet.start("a").await;
    let b = fleet.start("b").await;
    let c = fleet.start("c").await;
    let first = deploy(&a.client, "one").await;
    assert_eq!(
        end(&finished(&a.client, first.id).await).0,
        State::Succeeded
    );
    // A owns the target, idle; it is paused, and a deploy sent through B
    // is forwarded to it and waits there.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(a.pid(), libc::SIGSTOP) };
    let bytes = tar_of(&[("index.html", "held", 0o644)]);
    let sha = sha256_hex(&bytes);
    b.client.put_source(&sha, bytes).await.unwrap();
    let request = DeployRequest {
        on_conflict: Some(deployd::model::ConflictPolicy::Queue),
        idempotency_key: Some("held-1".into()),
        ..deploy_request(&sha)
    };
    let held = tokio::spawn({
        let client = b.client.clone();
        let request = request.clone();
        async move { client.deploy("web", "fleet", &request).await }
    });
    // Once A's lease lapsed, C takes the target with a deploy of its own;
    // until then C is told A owns it (503) and tries again.
    fleet.hold("build", true);
    let bytes = tar_of(&[("index.html", "two", 0o644)]);
    let two = sha256_hex(&bytes);
    c.client.put_source(&two, bytes).await.unwrap();
    // A request to C would be forwarded to A, paused, while A is live:
    // wait until it drops out of the live instances, its lease with it.
    let a_url = a.client.base_url().trim_end_matches('/').to_string();
    eventually_async("A to drop out of the live instances", || {
        let (client, a_url) = (c.client.clone(), a_url.clone());
        async move {
            let listed = client.instances().await.unwrap();
            let live = listed["instances"].as_array().cloned().unwrap_or_default();
            !live.iter().any(|i| i["address"] == a_url.as_str())
        }
    })
    .await;
    let taken = std::sync::Mutex::new(None);
    eventually_async("C to take the target once A's lease lapsed", || {
        let (client, slot) = (c.client.clone(), &taken);
        let request = deploy_request(&two);
        async move {
            match client.deploy("web", "fleet", &request).await {
                Ok(d) => *slot.lock().unwrap() = Some(d),
                Err(e) if e.is_transient() => {}
                Err(e) => panic!("deploy through C: {e}"),
            }
            slot.lock().unwrap().is_some()
        }
    })
    .await;
    let taken = taken.into_inner().unwrap().expect("C took the target");
    let pid_file = fleet.cluster().join(format!("build-{}.pid", taken.id));
    eventually("C's build to start", || pid_file.exists()).await;
    // SAFETY: as above.
    unsafe { libc::kill(a.pid(), libc::SIGCONT) };
    let answer = held.await.unwrap();
    assert!(
        matches!(
            &answer,
            Err(deployd::client::ClientError::Api { status: 503, .. })
        ),
        "A, no longer the owner, wrote nothing and said so: {answer:?}"
    );
    fleet.hold("build", false);
    assert_eq!(
        end(&finished(&c.client, taken.id).await).0,
        State::Succeeded
    );
    // Nothing of A's is left waiting: the target's history is the two deploys.
    let history = c.client.history("web", &Default::default()).await.unwrap();
    let ids: Vec<uuid::Uuid> = history.deployments.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![taken.id, first.id], "{history:?}");
    // The retry, with the same key, goes to the new owner.
    let retried = b.client.deploy("web", "fleet", &request).await.unwrap();
    assert_eq!(
        end(&finished(&c.client, retried.id).await).0,
        State::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_take_over_of_a_cut_activation_waits_for_the_restore() {
    let fleet = Fleet::new().await;
    let a = fleet.start("a").await;
    let b = fleet.start("b").await;
    let v1 = deploy(&a.client, "one").await;
    assert_eq!(end(&finished(&a.client, v1.id).await).0, State::Succeeded);
    fleet.hold("activate", true);
    let v2 = deploy(&a.client, "two").await;
    let switched = fleet.cluster().join(format!("switched-{}", v2.id));
    eventually("A's activate step to switch", || switched.exists()).await;
    a.kill9();
    fleet.hold("activate", false);
    // Cancels through B until one is answered for good.
    let answer = loop {
        match b.client.cancel(v2.id, Some("stop".into())).await {
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(200)).await,
            other => break other,
        }
    };
    let events = finished(&b.client, v2.id).await;
    let (state, error) = end(&events);
    assert!(
        error.contains("restored v1 on the cluster"),
        "{state} {error} ({answer:?})"
    );
    assert_eq!(fleet.live(), Some(v1.id.to_string()), "the cluster runs v1");
    let view = b.client.target("web", "fleet").await.unwrap();
    assert_eq!(view.active.map(|a| a.version).as_deref(), Some("v1"));
    assert!(view.drift.is_none());
}
