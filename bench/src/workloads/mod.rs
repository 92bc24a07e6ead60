//! One module per workload, each: parameters (clap), set-up, a bounded
//! measured phase, figures into the report.

pub mod initial_sync;
pub mod join;
pub mod latency;
pub mod media;
pub mod messages;
pub mod send;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    client::{ApiError, ApiResult},
    report::Report,
    setup::Ctx,
};

/// A workload in two parts. The set-up (users, rooms, filler messages) is
/// never measured; what it made can be kept in a state file and measured
/// from later, so that a slow server's set-up can run ahead of time.
pub trait Workload {
    /// What the set-up made, for the measured part.
    type Setup: Serialize + DeserializeOwned;

    async fn setup(&self, ctx: &Ctx) -> ApiResult<Self::Setup>;

    async fn measure(&self, ctx: &Ctx, setup: Self::Setup, report: &mut Report) -> ApiResult<()>;
}

/// Which parts of a workload one run does.
pub enum Phase {
    /// Set up, then measure.
    Whole,
    /// Set up and hand back what was made, to be kept.
    SetupOnly,
    /// Measure from a set-up kept from an earlier run.
    Measure(Value),
}

/// Runs `phase` of `workload`; for [`Phase::SetupOnly`], returns the set-up.
pub async fn drive<W: Workload>(
    workload: &W,
    phase: Phase,
    ctx: &Ctx,
    report: &mut Report,
) -> ApiResult<Option<Value>> {
    let setup_only = matches!(phase, Phase::SetupOnly);
    let setup = match phase {
        Phase::Measure(kept) => serde_json::from_value(kept).map_err(|e| {
            ApiError::local(
                "--state",
                format!("the set-up does not fit this workload: {e}"),
            )
        })?,
        Phase::Whole | Phase::SetupOnly => workload.setup(ctx).await?,
    };
    if setup_only {
        return Ok(Some(
            serde_json::to_value(&setup).expect("a set-up serializes"),
        ));
    }
    workload.measure(ctx, setup, report).await?;
    Ok(None)
}
