//! Sites (`[ha.sites]`, seed 000): each probe round rates every site by its
//! available/total nodes; `site_rounds` bad rounds in a row make a site
//! down (`site_down`, alert 1, with the counts), as many good ones up again
//! (`site_up`). When the site that holds the primary goes down, the leader
//! moves the primary to the best in-sync replica of a site that is up, by a
//! planned switchover (nothing acknowledged is lost: the target catches up
//! first); when no other site is up, or none of its replicas is in sync, it
//! raises `no_backup_site` (alert 2) and changes nothing. A primary that no
//! longer answers is the failover's (`failover.rs`); once a primary answers
//! again in a site that is still down, the switch moves it on.

use mod_distribute::topology::Alert;

use super::Voter;
use crate::rules;

impl Voter {
    /// One probe round of every configured site: its alerts, and a switch
    /// to do when the primary's site went down.
    pub(super) fn check_sites(&mut self) {
        let primary = self.consensus.state().borrow().topology.primary.clone();
        let (ratio, rounds) = (self.config.site_ratio, self.config.site_rounds);
        for (site, nodes) in &self.config.sites {
            let Some(health) = self.sites.get_mut(site) else {
                continue;
            };
            let total = nodes.len();
            let available = nodes
                .iter()
                .filter(|n| {
                    self.seen
                        .get(*n)
                        .is_some_and(|s| s.unreachable_since.is_none())
                })
                .count();
            let (group, name) = (self.config.group.clone(), site.clone());
            match health.round(available, total, ratio, rounds) {
                Some(true) => {
                    let holds_primary = primary.as_ref().is_some_and(|p| nodes.contains(p));
                    if holds_primary {
                        self.site_switch = Some(site.clone());
                    }
                    self.alerts.raise(Alert::SiteDown {
                        group,
                        site: name,
                        available,
                        total,
                        rounds,
                        primary: holds_primary,
                    });
                }
                Some(false) => {
                    if self.site_switch.as_ref() == Some(site) {
                        self.site_switch = None;
                    }
                    self.alerts.raise(Alert::SiteUp {
                        group,
                        site: name,
                        available,
                        total,
                    });
                }
                None => {}
            }
        }
    }

    /// The leader's move of the primary out of the site that went down:
    /// `true` when it switched (the round's work is done).
    pub(super) async fn switch_site(&mut self) -> bool {
        let Some(site) = self.site_switch.clone() else {
            return false;
        };
        let topology = self.consensus.state().borrow().topology.clone();
        let Some(primary) = topology.primary.clone() else {
            return false;
        };
        if self.config.site_of(&primary) != Some(site.as_str()) {
            self.site_switch = None; // moved already (a failover)
            return false;
        }
        let up_sites: Vec<&String> = self
            .sites
            .iter()
            .filter(|(name, health)| **name != site && !health.is_down())
            .map(|(name, _)| name)
            .collect();
        let candidates: Vec<_> = self
            .in_sync(&topology, &primary)
            .into_iter()
            .filter(|c| {
                self.config
                    .site_of(&c.addr)
                    .is_some_and(|s| up_sites.iter().any(|u| *u == s))
            })
            .collect();
        let target = match rules::choose(candidates, topology.replicas.len(), 0) {
            Ok(target) => target.addr,
            Err(reason) => {
                let reason = if up_sites.is_empty() {
                    "every other site is down too".to_owned()
                } else {
                    format!("no replica in sync in {up_sites:?}: {reason}")
                };
                self.alerts.raise(Alert::NoBackupSite {
                    group: self.config.group.clone(),
                    site: site.clone(),
                    reason,
                });
                self.site_switch = None;
                return false;
            }
        };
        tracing::warn!(%site, from = %primary, to = %target, "the primary's site is down: switching the primary to another site");
        match self.switchover(Some(target)).await {
            Ok(_) => {
                self.site_switch = None;
                true
            }
            Err(e) => {
                tracing::warn!(%site, error = %e, "site switch failed; retrying next probe");
                false
            }
        }
    }
}
