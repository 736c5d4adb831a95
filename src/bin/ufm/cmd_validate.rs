//! `ufm validate`: NC metrics and accuracies of every checkpoint of a training run.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `ufm validate`.
#[derive(Args, Debug, Clone)]
pub struct ValidateArgs {
    /// Run directory written by `ufm train` (holds config.json and epoch_NNN.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// Override the data folder saved in the run's config.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
}

pub fn run(args: ValidateArgs) -> Result<()> {
    println!("epoch        NC1        NC2        NC3        NC4  train@1  test@1");
    let rows = ufm::nn::validate::validate_run(
        &args.run,
        args.data_dir.as_deref(),
        args.batch_size,
        |r| {
            println!(
                "{:5} {:10.4e} {:10.4e} {:10.4e} {:10.4e} {:8.2} {:7.2}",
                r.epoch, r.nc1, r.nc2, r.nc3, r.nc4, r.train_acc1, r.test_acc1
            );
        },
    )?;
    println!(
        "{} checkpoints; wrote {} and {}",
        rows.len(),
        args.run.join("info.json").display(),
        args.run.join("nc_metrics.csv").display()
    );
    Ok(())
}
