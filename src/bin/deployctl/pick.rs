//! Which deployment a command acts on: the one a short id, prefix or full
//! id names, or the one a target (`-a/-c`) has running, queued or newest.

use crate::Failure;
use crate::settings::Settings;
use deployd::client::Client;
use deployd::model::short_id;
use uuid::Uuid;

/// Which deployment of a target a command acts on when given no id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The running one (cancel).
    Running,
    /// The running one, else the first queued, else the newest (watch,
    /// logs): what someone reattaching after `--detach` means.
    Newest,
}

/// The deployment a command names: `id` (a short id, prefix or full id),
/// else the one `pick` chooses on the target. Errors before any change: a
/// malformed id, no target to choose on, nothing to choose.
pub async fn pick(
    client: &Client,
    settings: &Settings,
    id: Option<&str>,
    pick: Pick,
) -> Result<Uuid, Failure> {
    if let Some(id) = id {
        return match id.parse::<deployd::model::DeploymentRef>() {
            Ok(deployd::model::DeploymentRef::Id(id)) => Ok(id),
            Ok(deployd::model::DeploymentRef::Prefix(prefix)) => {
                Ok(client.deployment(&prefix).await?.id)
            }
            Err(message) => Err(Failure::Usage(message)),
        };
    }
    let (app, cluster) = match (settings.app(), settings.cluster()) {
        (Ok(app), Ok(cluster)) => (app, cluster),
        _ => {
            return Err(Failure::Usage(
                "name a deployment: its id (as history shows it), or -a APP -c CLUSTER for \
                 the one running there"
                    .into(),
            ));
        }
    };
    let view = client.target(app, cluster).await?;
    let queued = view.queued.first().filter(|_| pick != Pick::Running);
    if let Some(deployment) = view.running.as_ref().or(queued) {
        return Ok(deployment.id);
    }
    let params = deployd::client::HistoryParams {
        cluster: Some(cluster.to_string()),
        limit: Some(1),
        ..Default::default()
    };
    let newest = client.history(app, &params).await?.deployments.pop();
    match (pick, newest) {
        (Pick::Newest, Some(newest)) => Ok(newest.id),
        (_, newest) => {
            let last = match newest {
                Some(d) => format!(
                    "; the last one was {} ({}): `{} logs {}` shows its output",
                    short_id(&d.id),
                    d.state,
                    crate::again(),
                    short_id(&d.id)
                ),
                None => "; it has no deployments yet".into(),
            };
            Err(Failure::NotFound(format!(
                "nothing is running on {app}/{cluster}{last}"
            )))
        }
    }
}
