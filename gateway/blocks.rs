//! The runtime block list (DH-1.13.11): `menshen block add|remove|list` and
//! `/api/v1/blocks`. A block is a CIDR with a reason and an optional expiry, kept in the
//! state store so it survives restarts.
//!
//! A change is stored first, then published as a new policy snapshot (read-copy-update,
//! so window changes made meanwhile are kept), then every live connection from a newly
//! blocked source is cut (`close_reason = "blocked"`) and a `block.*` record written.
//! A connection decided just before the publish re-checks itself when it registers
//! (the reload generation). Expired blocks are removed by a one-second sweep.

use crate::audit::{AuditLog, BlockEvent, Event};
use crate::listener::{CloseReason, Shared};
use crate::policy::IpSet;
use crate::windows::{Actor, BlockStore, StoreError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// One blocked network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub net: IpNet,
    pub reason: String,
    /// Who added it.
    pub by: String,
    pub created: jiff::Timestamp,
    pub expires: Option<jiff::Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored block {cidr} is unreadable: {reason}")]
    Corrupt { cidr: String, reason: String },
}

pub struct BlockManager {
    store: Arc<dyn BlockStore>,
    shared: Arc<Shared>,
    log: AuditLog,
    /// The list in force; the lock also serializes changes.
    list: Mutex<Vec<Block>>,
}

use crate::windows::store::blocking;

impl BlockManager {
    /// Load the stored blocks, drop the expired ones, and publish the rest.
    pub async fn start(store: Arc<dyn BlockStore>, shared: Arc<Shared>) -> Result<Arc<Self>, BlockError> {
        let rows = blocking(&store, |s| s.blocks()).await?;
        let mut list = Vec::new();
        for (cidr, doc) in rows {
            let b: Block =
                serde_json::from_str(&doc).map_err(|e| BlockError::Corrupt { cidr, reason: e.to_string() })?;
            list.push(b);
        }
        let log = shared.log.clone();
        let m = Arc::new(BlockManager { store, shared, log, list: Mutex::new(list) });
        m.expire(jiff::Timestamp::now()).await;
        let list = m.list.lock().await;
        m.publish(&list);
        drop(list);
        Ok(m)
    }

    pub async fn list(&self) -> Vec<Block> {
        self.list.lock().await.clone()
    }

    /// Add (or replace: a new reason or expiry) the block for `block.net`. Returns how
    /// many live connections it cut.
    pub async fn add(&self, block: Block, actor: &Actor) -> Result<u64, BlockError> {
        let mut list = self.list.lock().await;
        let doc = serde_json::to_string(&block)
            .map_err(|e| BlockError::Corrupt { cidr: block.net.to_string(), reason: e.to_string() })?;
        let (cidr, expires) = (block.net.to_string(), block.expires.map(|t| t.as_millisecond()));
        blocking(&self.store, move |s| s.put_block(&cidr, expires, &doc)).await?;
        list.retain(|b| b.net != block.net);
        list.push(block.clone());
        let set = self.publish(&list);
        let cut = self.cut(&set);
        self.announce("block.added", &block, actor, cut).await;
        Ok(cut)
    }

    /// Remove the block for `net`; false if there was none.
    pub async fn remove(&self, net: IpNet, actor: &Actor) -> Result<bool, BlockError> {
        let mut list = self.list.lock().await;
        let Some(block) = list.iter().find(|b| b.net == net).cloned() else {
            return Ok(false);
        };
        let cidr = net.to_string();
        blocking(&self.store, move |s| s.delete_block(&cidr)).await?;
        list.retain(|b| b.net != net);
        self.publish(&list);
        self.announce("block.removed", &block, actor, 0).await;
        Ok(true)
    }

    /// The sweep: every second, remove what has expired.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.expire(jiff::Timestamp::now()).await,
            }
        }
    }

    async fn expire(&self, now: jiff::Timestamp) {
        let mut list = self.list.lock().await;
        let expired: Vec<Block> = list.iter().filter(|b| b.expires.is_some_and(|e| e <= now)).cloned().collect();
        if expired.is_empty() {
            return;
        }
        for b in &expired {
            let cidr = b.net.to_string();
            // A store failure keeps the row; the block still ends now and the next
            // start drops it again.
            if let Err(e) = blocking(&self.store, move |s| s.delete_block(&cidr)).await {
                tracing::error!(error = %e, block = %b.net, "cannot remove an expired block from the store");
            }
        }
        list.retain(|b| !expired.contains(b));
        self.publish(&list);
        for b in &expired {
            self.announce("block.expired", b, &Actor::system(), 0).await;
        }
    }

    /// Put `list` in force; the set published.
    fn publish(&self, list: &[Block]) -> Arc<IpSet> {
        let nets: Vec<IpNet> = list.iter().map(|b| b.net).collect();
        let set = Arc::new(IpSet::new(&nets));
        self.shared.policy.rcu(|current| Arc::new(current.with_blocks(set.clone())));
        // After the swap: connections decided before it re-check themselves.
        self.shared.bump_generation();
        set
    }

    /// Cut every live connection from a source in `set`.
    fn cut(&self, set: &IpSet) -> u64 {
        let mut n = 0;
        for record in self.shared.live_connections() {
            if set.contains(record.src) {
                record.revoke(CloseReason::Blocked);
                n += 1;
            }
        }
        n
    }

    async fn announce(&self, event: &'static str, b: &Block, actor: &Actor, cut: u64) {
        self.log
            .record(Event::Block(BlockEvent {
                event,
                identity: actor.name.clone(),
                src_ip: actor.src,
                cidr: b.net.to_string(),
                reason: b.reason.clone(),
                expires: b.expires.map(|t| self.log.format_ts(t)),
                cut_connections: cut,
            }))
            .await;
    }
}
