//! MySQL / MariaDB (`[MySQL] host port user pass socket`, TCP or a Unix socket), through the
//! `mysql` crate, one connection kept between cycles.
//!
//! From `SHOW GLOBAL STATUS`, named `mysql_` + the variable in lower case: gauges
//! `mysql_threads_connected mysql_threads_running mysql_max_used_connections mysql_open_files
//! mysql_slow_queries`; counters sent as rates: every `Com_*`, `Bytes_*`, `Innodb_rows_*` and
//! `Innodb_data_*`, and `Queries Questions Connections Qcache_hits
//! Innodb_buffer_pool_read_requests Innodb_buffer_pool_write_requests`. InnoDB buffer pool:
//! `mysql_innodb_buffer_pool_pages_total _pages_free _pages_data` and
//! `mysql_innodb_buffer_pool_used_percent`. On a replica, `mysql_replication_lag` (seconds behind
//! the primary, from `SHOW SLAVE STATUS`).

use mysql::prelude::Queryable;
use puypuy_common::services::{ServiceConfig, ServiceKind};
use puypuy_common::Point;

use super::service::{int_of, Metrics, ServiceCheck};

const GAUGES: [&str; 5] =
    ["Threads_connected", "Threads_running", "Max_used_connections", "Open_files", "Slow_queries"];
const COUNTER_PREFIXES: [&str; 4] = ["Com_", "Bytes_", "Innodb_rows_", "Innodb_data_"];
const COUNTERS: [&str; 6] = [
    "Queries",
    "Questions",
    "Connections",
    "Qcache_hits",
    "Innodb_buffer_pool_read_requests",
    "Innodb_buffer_pool_write_requests",
];

/// Turns `SHOW GLOBAL STATUS` rows into points.
pub fn parse_status(rows: &[(String, String)], m: &mut Metrics) {
    let get = |k: &str| rows.iter().find(|(n, _)| n == k).and_then(|(_, v)| int_of(v));
    for (name, value) in rows {
        let Some(v) = int_of(value) else { continue };
        let metric = format!("mysql_{}", name.to_ascii_lowercase());
        if GAUGES.contains(&name.as_str()) {
            m.int(metric, v);
        } else if COUNTERS.contains(&name.as_str())
            || (COUNTER_PREFIXES.iter().any(|p| name.starts_with(p))
                && !name.ends_with("_pending_reads")
                && !name.ends_with("_pending_writes")
                && !name.ends_with("_pending_fsyncs"))
        {
            m.counter(metric, v);
        }
    }
    let pages = (
        get("Innodb_buffer_pool_pages_total"),
        get("Innodb_buffer_pool_pages_free"),
        get("Innodb_buffer_pool_pages_data"),
    );
    if let (Some(total), Some(free), Some(data)) = pages {
        m.int("mysql_innodb_buffer_pool_pages_total", total);
        m.int("mysql_innodb_buffer_pool_pages_free", free);
        m.int("mysql_innodb_buffer_pool_pages_data", data);
        if total > 0 {
            m.float(
                "mysql_innodb_buffer_pool_used_percent",
                ((total - free) as f64 * 10000.0 / total as f64).round() / 100.0,
            );
        }
    }
}

pub struct MySql {
    config: ServiceConfig,
    conn: Option<mysql::Conn>,
}

impl MySql {
    pub fn new(config: ServiceConfig) -> MySql {
        MySql { config, conn: None }
    }

    fn connect(&self) -> Result<mysql::Conn, String> {
        let c = &self.config;
        let mut opts = mysql::OptsBuilder::new()
            .user(Some(c.user.clone()))
            .pass(Some(c.pass.clone()))
            .tcp_connect_timeout(Some(c.timeout))
            .read_timeout(Some(c.timeout))
            .write_timeout(Some(c.timeout))
            .prefer_socket(false);
        let place = match &c.socket {
            Some(socket) => {
                opts = opts.socket(Some(socket.clone()));
                socket.clone()
            }
            None => {
                opts = opts.ip_or_hostname(Some(c.host.clone())).tcp_port(c.port);
                format!("{}:{}", c.host, c.port)
            }
        };
        mysql::Conn::new(opts).map_err(|e| {
            let text = e.to_string();
            if text.contains("1045") || text.contains("Access denied") {
                format!("{place}: access denied for user {:?}: check [{}] user and pass", c.user, c.section)
            } else {
                format!("{place}: {text}")
            }
        })
    }

    fn query(conn: &mut mysql::Conn, m: &mut Metrics) -> Result<(), String> {
        let rows: Vec<(String, String)> =
            conn.query("SHOW GLOBAL STATUS").map_err(|e| format!("SHOW GLOBAL STATUS: {e}"))?;
        parse_status(&rows, m);
        // Not a replica (or no privilege for it): no lag metric.
        if let Ok(replica) = conn.query::<mysql::Row, _>("SHOW SLAVE STATUS") {
            if let Some(row) = replica.first() {
                let index = row.columns_ref().iter().position(|c| c.name_str() == "Seconds_Behind_Master");
                if let Some(lag) =
                    index.and_then(|i| row.get_opt::<Option<i64>, usize>(i)).and_then(Result::ok).flatten()
                {
                    m.int("mysql_replication_lag", lag);
                }
            }
        }
        Ok(())
    }
}

impl ServiceCheck for MySql {
    fn collect(&mut self, timestamp: u64) -> Result<Vec<Point>, String> {
        let mut m = Metrics::new(ServiceKind::MySql, self.config.instance.clone(), timestamp);
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let Some(conn) = self.conn.as_mut() else { return Err("no connection".into()) };
        if let Err(e) = Self::query(conn, &mut m) {
            // The server went away or the connection broke: reconnect next cycle.
            self.conn = None;
            return Err(e);
        }
        Ok(m.points)
    }
}
