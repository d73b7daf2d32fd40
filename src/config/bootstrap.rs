//! The bootstrap inputs, validated: template or static file, values, config
//! directory and certificate pairs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::bootstrap::{self, BootstrapPlan, CertPair, SdsSecret, TemplateSource, Values};
use crate::cli::{BootstrapArgs, CertArgs, CertRotation};

use super::concurrency::{concurrency, Concurrency};
use super::env::{private_tmp, service_node, Env};
use super::Problems;

/// The bootstrap inputs, validated.
#[derive(Debug, Clone)]
pub(super) struct BootstrapSettings {
    /// Template or static file.
    pub plan: BootstrapPlan,
    /// Where epochs' files go.
    pub config_dir: PathBuf,
    /// `true` when baton chose (and so removes) `config_dir`.
    pub owns_config_dir: bool,
    /// `--cert` pairs.
    pub certs: Vec<CertPair>,
    /// Envoy's workers: `--concurrency`, or from the CPU limit.
    pub concurrency: Concurrency,
    /// `--cert-rotation sds`: the SDS secret of each pair (empty: `restart`).
    pub sds: Vec<SdsSecret>,
}

impl BootstrapSettings {
    /// The template or static bootstrap, when it is a file: watched (an edit
    /// restarts), not waited for (missing is a configuration error).
    pub fn bootstrap_file(&self) -> Option<PathBuf> {
        match &self.plan {
            BootstrapPlan::Template {
                source: TemplateSource::File(path),
                ..
            }
            | BootstrapPlan::Custom(path) => Some(path.clone()),
            BootstrapPlan::Template { .. } => None,
        }
    }
}

/// Every certificate and key file of the pairs.
pub(super) fn cert_files(certs: &[CertPair]) -> Vec<PathBuf> {
    certs
        .iter()
        .flat_map(|p| [p.cert.clone(), p.key.clone()])
        .collect()
}

/// Validate the bootstrap inputs; problems are recorded, `None` if there were any.
pub(super) fn bootstrap_settings(
    args: &BootstrapArgs,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<BootstrapSettings> {
    let mut local = Problems::default();
    let mut vars = BTreeMap::new();
    for arg in &args.vars {
        match bootstrap::parse_var(arg) {
            Ok((k, v)) => {
                if vars.insert(k.clone(), v).is_some() {
                    local.push(format!("--var {arg}: {k} is given twice"));
                }
            }
            Err(e) => local.push(format!("--var {arg}: {e}")),
        }
    }
    let certs = cert_pairs(&args.certs, &mut local);
    let (config_dir, owns_config_dir) = match &args.config_dir {
        Some(dir) => (dir.clone(), false),
        None => (private_tmp(env, ""), true),
    };
    let concurrency = concurrency(args.concurrency, &env.cpus());
    let sds: Vec<SdsSecret> = match args.cert_rotation {
        CertRotation::Restart => Vec::new(),
        CertRotation::Sds if args.certs.certs.is_empty() => {
            local.push("--cert-rotation sds: no --cert pair to hand to Envoy");
            Vec::new()
        }
        CertRotation::Sds => (0..certs.len())
            .map(|i| SdsSecret::of(&config_dir, i))
            .collect(),
    };
    let values = Values {
        node_id: service_node(args, env),
        cluster: args.service_cluster.clone(),
        admin_port: args.admin_port,
        discovery_address: args.discovery_address.clone(),
        metadata: bootstrap::metadata_from_env(env.vars()),
        config_dir: config_dir.clone(),
        certs: certs.clone(),
        sds: sds.clone(),
        concurrency: Some(concurrency.workers),
        vars,
    };
    if local.is_empty() {
        local.check(values.validate());
    }
    let plan = match &args.custom_config {
        Some(path) => BootstrapPlan::Custom(path.clone()),
        None => BootstrapPlan::Template {
            source: TemplateSource::parse(&args.template),
            values: Box::new(values),
        },
    };
    let ok = local.is_empty();
    problems.extend(local);
    ok.then_some(BootstrapSettings {
        plan,
        config_dir,
        owns_config_dir,
        certs,
        concurrency,
        sds,
    })
}

/// Every `--cert CERT:KEY` that parses; each one that does not is a problem.
pub(super) fn cert_pairs(args: &CertArgs, problems: &mut Problems) -> Vec<CertPair> {
    args.certs
        .iter()
        .filter_map(|pair| problems.check(parse_cert_pair(pair)))
        .collect()
}

fn parse_cert_pair(pair: &str) -> Result<CertPair, String> {
    match pair.split_once(':') {
        Some((cert, key)) if !cert.is_empty() && !key.is_empty() => Ok(CertPair {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        _ => Err(format!(
            "--cert {pair}: expected CERT:KEY, two PEM file paths separated by a colon"
        )),
    }
}
