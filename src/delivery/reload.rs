//! Configuration reload (SIGHUP, `smarthost reload`): the new configuration is
//! put in force without dropping a session, an attempt or a queued message.

use std::sync::Arc;

use crate::clock::unix_now;
use crate::config::Config;
use crate::spool::StoreError;
use crate::upstream::Resolver;

use super::{smtp::route_tls, Delivery, DeliveryError, Generation};

/// What a reload changed, for the log and `smarthost reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reloaded {
    pub routes: usize,
    pub queued: usize,
    /// Queued messages whose route is not the one it was before the reload.
    pub rerouted: usize,
    /// Settings that only a restart applies (listeners, queue, sockets).
    pub needs_restart: Vec<String>,
}

impl Delivery {
    /// Puts a new, already validated configuration in force without dropping
    /// anything: open sessions and attempts in flight finish on the settings
    /// they started with; the workers of changed routes are replaced once their
    /// attempt ends; every queued message is scheduled again on the route the new
    /// table gives it. Fails, changing nothing, if the routes' TLS settings or
    /// the resolver cannot be built.
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<Reloaded, DeliveryError> {
        let tls = route_tls(&config)?;
        let resolver = Resolver::new(&config.dns)?;
        let config = Arc::new(config);
        let old = self.current();
        if self.shared.is_stopping() {
            return Err(DeliveryError::Stopping);
        }
        let mut report = Reloaded {
            routes: config.routes.len(),
            needs_restart: restart_only_changes(&old.config, &config),
            ..Reloaded::default()
        };
        self.shared.tokens.reconfigure(&config.token_sources);
        self.shared.metrics.know_routes(config.routes.keys());
        self.limiters.configure(&config);
        let number = old.number + 1;
        self.shared.set_config(config.clone());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Generation {
            number,
            config: config.clone(),
            tls,
            resolver,
        });
        // Old workers leave after their attempt; the schedule is rebuilt from
        // the store, so no message stays queued under a route that is gone.
        self.generation.send_replace(number);
        self.shared.scheduler.reset(config.routes.keys());
        self.schedule_queue_anew(&old.config, &config, &mut report)
            .await;
        self.spawn_workers();
        Ok(report)
    }

    /// Counts the queue and moves the messages whose route changed to their
    /// new route, due at once. The schedule itself comes back from the due
    /// index (the caller cleared it): routes are looked up as it is read.
    async fn schedule_queue_anew(&self, old: &Config, new: &Config, report: &mut Reloaded) {
        let now = unix_now();
        let mut moved = Vec::new();
        let mut claimed = Vec::new();
        for env in self.shared.spool.messages() {
            let env = match env {
                Ok(env) => env,
                // Quarantined: on no schedule, whatever the routes.
                Err(StoreError::Damaged { .. }) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable queue entry");
                    continue;
                }
            };
            report.queued += 1;
            let before = old.routing.lookup(&env.route_sender).route;
            let after = new.routing.lookup(&env.route_sender).route;
            // A message on a new route is tried there at once: the operator
            // changed the route because the old one was not getting it out.
            // One in an attempt right now keeps its schedule; the attempt's
            // end puts it on the new route.
            let claim = (after != before && !env.held)
                .then(|| self.shared.spool.claim(&env.id))
                .flatten();
            let Some(claim) = claim else {
                continue;
            };
            // Read again under the claim: an attempt may have changed it
            // (or finished it) since the scan read it.
            let Ok(Some(mut env)) = self.shared.spool.load(&env.id) else {
                continue;
            };
            report.rerouted += 1;
            for r in env.recipients.iter_mut().filter(|r| !r.state.is_final()) {
                r.next_attempt = now;
            }
            env.event(now, format!("route {before} -> {after} by a reload"));
            claimed.push(claim);
            moved.push(env);
        }
        if claimed.is_empty() {
            return;
        }
        let refs: Vec<_> = moved.iter().collect();
        let written = self.shared.spool.reschedule(&refs, None).await;
        drop(claimed);
        match written {
            Ok(()) => moved.iter().for_each(|env| self.shared.schedule(env)),
            // The old due times stand; the messages still go out on the new route.
            Err(e) => tracing::error!("reload: cannot record the new routes' due times: {e}"),
        }
    }
}

/// Settings a running daemon cannot change: they are bound or opened at start.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            changed.push(name.to_string());
        }
    };
    macro_rules! compare {
        ($($($field:ident).+),+) => {$(
            check(
                &stringify!($($field).+).replace(' ', ""),
                old.$($field).+ == new.$($field).+,
            );
        )+};
    }
    compare!(
        listen,
        queue_path,
        queue_cache_size,
        queue_active_limit,
        limits.max_connections,
        local.socket_dir,
        local.control_group,
        local.admin_group,
        local.drop_dir,
        oauth.share_socket,
        oauth.share_group,
        oauth.share_http,
        metrics
    );
    let shared = |c: &Config| -> Vec<(String, Vec<String>)> {
        c.token_sources
            .values()
            .map(|s| (s.name.clone(), s.share_as.clone()))
            .collect()
    };
    check("token_source share_as", shared(old) == shared(new));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str, socket_dir: &str) -> Config {
        let text = format!(
            "hostname = \"relay.test\"\nlisten = [\"{listen}\"]\nqueue_path = \"/tmp/q\"\n\
             [[route]]\nname = \"c\"\ntype = \"directory\"\npath = \"/tmp/out\"\n\
             [routing]\ndefault = \"c\"\n[local]\nsocket_dir = \"{socket_dir}\"\n"
        );
        Config::parse(&text, "test.toml", std::path::Path::new("/tmp")).expect("config")
    }

    #[test]
    fn restart_only_settings_are_named() {
        let old = config("127.0.0.1:25", "/run/a");
        assert!(restart_only_changes(&old, &config("127.0.0.1:25", "/run/a")).is_empty());
        assert_eq!(
            restart_only_changes(&old, &config("127.0.0.1:2525", "/run/b")),
            ["listen", "local.socket_dir"]
        );
    }
}
