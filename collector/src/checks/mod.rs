//! The system checks, one file each, named after the old `check_<name>` scripts. Each exposes a
//! pure `parse` over the text it reads and a `collect(&Context)`; [`system_check`] maps each
//! [`SystemCheck`] of `system_checks` to it.

pub mod cpustats;
pub mod disks;
pub mod ipconntrack;
pub mod load_average;
pub mod memory;
pub mod network_bytes;
pub mod openfiles;
pub mod tcpconn;

use crate::context::Context;
use puypuy_common::config::SystemCheck;
use puypuy_common::Point;

pub type CheckFn = fn(&Context) -> Result<Vec<Point>, String>;

/// The code of each system check. The list and the names live once, in
/// [`puypuy_common::config::SystemCheck`]; this match is exhaustive, so they cannot disagree.
pub fn system_check(check: SystemCheck) -> CheckFn {
    match check {
        SystemCheck::CpuStats => cpustats::collect,
        SystemCheck::Memory => memory::collect,
        SystemCheck::LoadAverage => load_average::collect,
        SystemCheck::NetworkBytes => network_bytes::collect,
        SystemCheck::Disks => disks::collect,
        SystemCheck::TcpConn => tcpconn::collect,
        SystemCheck::IpConntrack => ipconntrack::collect,
        SystemCheck::OpenFiles => openfiles::collect,
    }
}

pub mod apache;
pub mod haproxy;
pub mod memcached;
pub mod mysql;
pub mod nginx;
pub mod phpfpm;
pub mod prometheus;
pub mod redis;
pub mod service;

use puypuy_common::services::{ServiceConfig, ServiceKind};

/// The check for one configured service section.
pub fn service_check(config: &ServiceConfig) -> Box<dyn service::ServiceCheck> {
    let c = config.clone();
    let http = |what, parse| {
        Box::new(service::HttpCheck { config: config.clone(), what, parse }) as Box<dyn service::ServiceCheck>
    };
    match config.kind {
        ServiceKind::MySql => Box::new(mysql::MySql::new(c)),
        ServiceKind::Redis => Box::new(redis::Redis(c)),
        ServiceKind::Memcached => Box::new(memcached::Memcached(c)),
        ServiceKind::Nginx => http("a stub_status page", |t, _, m| nginx::parse(t, m)),
        ServiceKind::Apache => http("a mod_status ?auto page", |t, _, m| apache::parse(t, m)),
        ServiceKind::PhpFpm => http("a php-fpm JSON status", |t, _, m| phpfpm::parse(t, m)),
        ServiceKind::HaProxy => http("HAProxy stats CSV", |t, c, m| haproxy::parse(t, &c.upstream, m)),
        ServiceKind::Prometheus => Box::new(prometheus::PrometheusCheck::new(c)),
    }
}
