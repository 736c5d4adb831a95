//! Figures with plotters: every figure is drawn from exported data (CSV/JSON) and written as
//! both PNG and SVG. Text uses the DejaVu Sans font embedded in the binary (no system fonts).

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Registers the embedded DejaVu Sans (regular, bold) as `sans-serif`. Idempotent.
pub fn ensure_fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .and_then(|_| {
                plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
            })
            .map_err(|_| "the embedded DejaVu font could not be registered".to_string())
    })
    .clone()
    .map_err(Error::Unsupported)
}

/// One named curve.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points $(x, y)$; non-finite points (and non-positive ones on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A line chart specification.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// Log-scale y axis.
    pub log_y: bool,
    /// Curves.
    pub series: Vec<Series>,
}

/// The 10-colour palette (Tableau).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Unsupported(format!("plotting failed: {e:?}"))
}

/// Writes `<stem>.png` (900×600) and `<stem>.svg`; returns both paths.
pub fn save_line_chart(stem: &Path, chart: &LineChart) -> Result<(PathBuf, PathBuf)> {
    ensure_fonts()?;
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, (900, 600)).into_drawing_area();
        draw_line_chart(&root, chart)?;
        root.present().map_err(plot_err)?;
    }
    {
        let root = SVGBackend::new(&svg, (900, 600)).into_drawing_area();
        draw_line_chart(&root, chart)?;
        root.present().map_err(plot_err)?;
    }
    Ok((png, svg))
}

/// Draws a line chart on any plotters drawing area.
pub fn draw_line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let pts: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(keep))
        .collect();
    if pts.is_empty() {
        return Err(Error::Data(format!(
            "nothing to plot in `{}`: no finite points",
            chart.title
        )));
    }
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (mut y0, mut y1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let mut cb = ChartBuilder::on(root);
    cb.caption(&chart.title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80);
    let style = |i: usize| PALETTE[i % PALETTE.len()].stroke_width(3);
    macro_rules! finish {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .label_style(("sans-serif", 16))
                .axis_desc_style(("sans-serif", 19))
                .draw()
                .map_err(plot_err)?;
            for (i, s) in chart.series.iter().enumerate() {
                let p: Vec<(f64, f64)> = s.points.iter().copied().filter(keep).collect();
                let color = PALETTE[i % PALETTE.len()];
                ctx.draw_series(LineSeries::new(p, style(i)))
                    .map_err(plot_err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                    });
            }
            if chart.series.len() > 1 || !chart.series[0].name.is_empty() {
                ctx.configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 17))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(plot_err)?;
            }
        }};
    }
    if chart.log_y {
        let (ly0, ly1) = (
            y0.log10().floor(),
            y1.log10().ceil().max(y0.log10().floor() + 1.0),
        );
        finish!(cb
            .build_cartesian_2d(x0..x1, (10f64.powf(ly0)..10f64.powf(ly1)).log_scale())
            .map_err(plot_err)?);
    } else {
        if y1 <= y0 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        let pad = 0.05 * (y1 - y0);
        finish!(cb
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(plot_err)?);
    }
    Ok(())
}

/// Writes several line charts side by side (one panel each, 800×600 per panel) as
/// `<stem>.png` and `<stem>.svg`, each panel drawn by [`draw_line_chart`]; returns both paths.
pub fn save_line_panels(stem: &Path, charts: &[LineChart]) -> Result<(PathBuf, PathBuf)> {
    ensure_fonts()?;
    if charts.is_empty() {
        return Err(Error::Data("no panels to draw".into()));
    }
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let size = (800 * charts.len() as u32, 600);
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        for (area, chart) in root.split_evenly((1, charts.len())).iter().zip(charts) {
            draw_line_chart(area, chart)?;
        }
        root.present().map_err(plot_err)?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        for (area, chart) in root.split_evenly((1, charts.len())).iter().zip(charts) {
            draw_line_chart(area, chart)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok((png, svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_chart_writes_png_and_svg_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let chart = LineChart {
            title: "test".into(),
            x_label: "iteration".into(),
            y_label: "f - f*".into(),
            log_y: true,
            series: vec![
                Series {
                    name: "a".into(),
                    points: (1..50).map(|i| (i as f64, 10f64.powi(-i / 5))).collect(),
                },
                Series {
                    name: "b".into(),
                    points: vec![(1.0, 1.0), (40.0, 1e-3), (41.0, 0.0)],
                },
            ],
        };
        let (png, svg) = save_line_chart(&dir.path().join("fig"), &chart).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(s.contains("<text") && s.contains("iteration"));
        let empty = LineChart {
            series: vec![Series {
                name: "x".into(),
                points: vec![(0.0, f64::NAN)],
            }],
            ..chart
        };
        assert!(save_line_chart(&dir.path().join("e"), &empty).is_err());
    }
}
