//! `ufm validate`: NC metrics and accuracies of every checkpoint of a training run.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use ufm::nn::cuda::NnDevice;

use crate::cmd_solve::DeviceArg;

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
    /// Where to extract the features and accumulate their statistics: cpu, cuda, or auto
    /// (CUDA when usable, else the CPU with a note on stderr).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

pub fn run(args: ValidateArgs) -> Result<()> {
    ufm::nn::keep_freed_memory();
    let device = NnDevice::select(args.device.into(), None)?;
    if let Some(reason) = device.fallback() {
        eprintln!("note: --device auto: {reason}; running on the CPU");
    }
    if !device.is_cpu() {
        println!("device {}", device.name());
    }
    println!("epoch        NC1        NC2        NC3        NC4  train@1  test@1");
    let rows = ufm::nn::validate::validate_run_on(
        &args.run,
        args.data_dir.as_deref(),
        args.batch_size,
        &device,
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
