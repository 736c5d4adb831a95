//! `ufm plot`: the paper's panels (NC1..NC4, train/test accuracy against epoch) from the
//! `info.json` of one or more validated runs, several runs per axis.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use ufm::plot::{chart_notes, has_points, save_line_chart, LineChart, Series};

/// Arguments of `ufm plot`.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Run directories (each with info.json from `ufm validate`); repeat for several curves.
    #[arg(long, required = true, num_args = 1..)]
    pub run: Vec<PathBuf>,
    /// Legend labels, one per run (default: the run folder name).
    #[arg(long, num_args = 1..)]
    pub label: Vec<String>,
    /// Output folder.
    #[arg(long, default_value = "paper_figs")]
    pub out: PathBuf,
    /// File name prefix, e.g. mnist-mlp.
    #[arg(long, default_value = "nc")]
    pub prefix: String,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let mut infos = Vec::new();
    for (i, r) in args.run.iter().enumerate() {
        let info = ufm::nn::validate::read_info(r)?;
        let name = args.label.get(i).cloned().unwrap_or_else(|| {
            r.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        infos.push((name, info));
    }
    type Pick = fn(&ufm::nn::validate::Info) -> &Vec<f64>;
    let panels: [(&str, &str, bool, Pick); 6] = [
        ("NC1", "NC1 = tr(Σ_W Σ_B⁺)/K", true, |i| {
            &i.collapse_metric
        }),
        ("NC2", "NC2 (ETF error of W)", true, |i| &i.etf_metric),
        ("NC3", "NC3 (W vs class means)", true, |i| {
            &i.wh_relation_metric
        }),
        ("NC4", "NC4 = ‖W μ_G + b‖", true, |i| {
            &i.whb_relation_metric
        }),
        ("train-acc", "training accuracy (%)", false, |i| {
            &i.train_acc1
        }),
        ("test-acc", "test accuracy (%)", false, |i| &i.test_acc1),
    ];
    for (key, ylabel, log_y, pick) in panels {
        let series = infos
            .iter()
            .map(|(name, info)| Series {
                name: name.clone(),
                points: info
                    .epoch
                    .iter()
                    .zip(pick(info))
                    .map(|(&e, &v)| (e as f64, v))
                    .collect(),
            })
            .collect();
        let chart = LineChart {
            title: format!("{} {key}", args.prefix),
            x_label: "epoch".into(),
            y_label: ylabel.into(),
            log_y,
            series,
        };
        if !has_points(&chart) {
            // e.g. NC4 of a classifier without bias: `ufm validate` writes null (undefined)
            eprintln!("note: {key}: no defined values in any run (null in info.json); no figure");
            continue;
        }
        let (png, _) = save_line_chart(&args.out.join(format!("{}-{key}", args.prefix)), &chart)?;
        for note in chart_notes(&chart) {
            eprintln!("note: {key}: {note}");
        }
        println!("wrote {} (+ .svg)", png.display());
    }
    Ok(())
}
