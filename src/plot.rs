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
    draw_xy(root, chart, false)
}

/// Draws a scatter chart (same specification as a line chart, points instead of lines).
pub fn draw_scatter_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    draw_xy(root, chart, true)
}

fn draw_xy<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    points: bool,
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
    // Legend in the corner (a quarter of each axis) that holds the fewest data points.
    let legend_pos = {
        let ty = |y: f64| if chart.log_y { y.log10() } else { y };
        let (ly0, ly1) = (ty(y0), ty(y1).max(ty(y0) + 1e-300));
        let corners = [
            (SeriesLabelPosition::UpperRight, true, true),
            (SeriesLabelPosition::UpperLeft, false, true),
            (SeriesLabelPosition::LowerLeft, false, false),
            (SeriesLabelPosition::LowerRight, true, false),
        ];
        let count = |right: bool, upper: bool| {
            pts.iter()
                .filter(|&&(x, y)| {
                    let u = (x - x0) / (x1 - x0);
                    let v = (ty(y) - ly0) / (ly1 - ly0);
                    (if right { u > 0.6 } else { u < 0.4 })
                        && (if upper { v > 0.6 } else { v < 0.4 })
                })
                .count()
        };
        corners
            .into_iter()
            .min_by_key(|&(_, r, u)| count(r, u))
            .map(|c| c.0)
            .unwrap_or(SeriesLabelPosition::UpperRight)
    };
    let log_fmt = |v: &f64| {
        let e = v.log10().round() + 0.0; // + 0.0 turns -0 into 0
        if (v.log10() - e).abs() < 1e-6 {
            format!("1e{e}")
        } else {
            format!("{v:.1e}")
        }
    };
    macro_rules! finish {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            let mut mesh = ctx.configure_mesh();
            if chart.log_y {
                mesh.y_label_formatter(&log_fmt);
            }
            mesh.x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .label_style(("sans-serif", 16))
                .axis_desc_style(("sans-serif", 19))
                .draw()
                .map_err(plot_err)?;
            for (i, s) in chart.series.iter().enumerate() {
                let p: Vec<(f64, f64)> = s.points.iter().copied().filter(keep).collect();
                let color = PALETTE[i % PALETTE.len()];
                let anno = if points {
                    ctx.draw_series(p.into_iter().map(|q| Circle::new(q, 3, color.filled())))
                        .map_err(plot_err)?
                } else {
                    ctx.draw_series(LineSeries::new(p, style(i)))
                        .map_err(plot_err)?
                };
                anno.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            }
            if chart.series.len() > 1 || !chart.series[0].name.is_empty() {
                ctx.configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 17))
                    .position(legend_pos.clone())
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

/// A heatmap of values in $[v_{\min},v_{\max}]$ on a grid of labelled cells.
#[derive(Clone, Debug)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// Labels of the columns (x).
    pub x_ticks: Vec<String>,
    /// Labels of the rows (y, bottom to top).
    pub y_ticks: Vec<String>,
    /// `values[row][col]`; NaN cells are drawn grey.
    pub values: Vec<Vec<f64>>,
    /// Colour scale range.
    pub range: (f64, f64),
    /// Write each value in its cell with this many decimals (`None`: no text).
    pub annotate: Option<usize>,
}

/// One panel of a multi-panel figure.
#[derive(Clone, Debug)]
pub enum Panel {
    /// A line chart.
    Lines(LineChart),
    /// A scatter chart.
    Points(LineChart),
    /// A heatmap.
    Heatmap(Heatmap),
}

/// Colour of $t\in[0,1]$ on a white-to-blue scale (readable in greyscale).
fn heat_color(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// Draws a heatmap on any plotters drawing area.
pub fn draw_heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &Heatmap) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let (nx, ny) = (h.x_ticks.len(), h.y_ticks.len());
    if nx == 0 || ny == 0 || h.values.len() != ny || h.values.iter().any(|r| r.len() != nx) {
        return Err(Error::Data(format!(
            "heatmap `{}`: values must be {ny} rows of {nx} columns",
            h.title
        )));
    }
    let mut chart = ChartBuilder::on(root)
        .caption(&h.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)
        .map_err(plot_err)?;
    let xt = h.x_ticks.clone();
    let yt = h.y_ticks.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nx * 2 + 1)
        .y_labels(ny * 2 + 1)
        .x_label_formatter(&move |v| {
            let i = (*v - 0.5).round();
            if (v - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < xt.len() {
                xt[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&move |v| {
            let i = (*v - 0.5).round();
            if (v - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < yt.len() {
                yt[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc(h.x_label.as_str())
        .y_desc(h.y_label.as_str())
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(plot_err)?;
    let (lo, hi) = h.range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    for (r, row) in h.values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let (x0, y0) = (c as f64, r as f64);
            let fill = if v.is_finite() {
                heat_color((v - lo) / span)
            } else {
                RGBColor(200, 200, 200)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                    fill.filled(),
                )))
                .map_err(plot_err)?;
            if let (Some(dec), true) = (h.annotate, v.is_finite()) {
                let t = (v - lo) / span;
                let color = if t > 0.55 { WHITE } else { BLACK };
                let style = TextStyle::from(("sans-serif", 16).into_font())
                    .color(&color)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.dec$}"),
                        (x0 + 0.5, y0 + 0.5),
                        style,
                    )))
                    .map_err(plot_err)?;
            }
        }
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()>
where
    DB::ErrorType: 'static,
{
    match p {
        Panel::Lines(c) => draw_xy(root, c, false),
        Panel::Points(c) => draw_xy(root, c, true),
        Panel::Heatmap(h) => draw_heatmap(root, h),
    }
}

/// Writes a figure of `panels` on a grid with `cols` columns, each panel `panel_size` pixels,
/// as `<stem>.png` and `<stem>.svg`, with an optional overall title.
pub fn save_panels(
    stem: &Path,
    title: Option<&str>,
    panels: &[Panel],
    cols: usize,
    panel_size: (u32, u32),
) -> Result<(PathBuf, PathBuf)> {
    ensure_fonts()?;
    if panels.is_empty() {
        return Err(Error::Data("a figure needs at least one panel".into()));
    }
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let cols = cols.clamp(1, panels.len());
    let rows = panels.len().div_ceil(cols);
    let head = if title.is_some() { 44 } else { 0 };
    let size = (
        panel_size.0 * cols as u32,
        panel_size.1 * rows as u32 + head,
    );
    fn draw_all<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        title: Option<&str>,
        panels: &[Panel],
        rows: usize,
        cols: usize,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(plot_err)?;
        let body = match title {
            Some(t) => root
                .titled(t, ("sans-serif", 28).into_font().style(FontStyle::Bold))
                .map_err(plot_err)?,
            None => root.clone(),
        };
        for (area, p) in body.split_evenly((rows, cols)).iter().zip(panels) {
            draw_panel(area, p)?;
        }
        root.present().map_err(plot_err)
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_all(
        BitMapBackend::new(&png, size).into_drawing_area(),
        title,
        panels,
        rows,
        cols,
    )?;
    draw_all(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        panels,
        rows,
        cols,
    )?;
    Ok((png, svg))
}

/// Several line charts side by side (one row, 800×600 per panel) as `<stem>.png` and
/// `<stem>.svg`: [`save_panels`] with [`Panel::Lines`].
pub fn save_line_panels(stem: &Path, charts: &[LineChart]) -> Result<(PathBuf, PathBuf)> {
    let panels: Vec<Panel> = charts.iter().cloned().map(Panel::Lines).collect();
    save_panels(stem, None, &panels, panels.len().max(1), (800, 600))
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

    #[test]
    fn panels_with_scatter_and_heatmap_write_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let pts = LineChart {
            title: "points".into(),
            x_label: "index".into(),
            y_label: "|eigenvalue|".into(),
            log_y: true,
            series: vec![Series {
                name: "positive".into(),
                points: (1..30).map(|i| (i as f64, i as f64 * 0.1)).collect(),
            }],
        };
        let heat = Heatmap {
            title: "success".into(),
            x_label: "d".into(),
            y_label: "lambda".into(),
            x_ticks: vec!["2".into(), "3".into()],
            y_ticks: vec!["1e-3".into()],
            values: vec![vec![0.25, f64::NAN]],
            range: (0.0, 1.0),
            annotate: Some(2),
        };
        let (png, svg) = save_panels(
            &dir.path().join("fig"),
            Some("two panels"),
            &[Panel::Points(pts), Panel::Heatmap(heat.clone())],
            2,
            (400, 300),
        )
        .unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(s.contains("0.25") && s.contains("two panels") && s.contains("lambda"));
        let bad = Heatmap {
            values: vec![vec![1.0]],
            ..heat
        };
        assert!(save_panels(
            &dir.path().join("b"),
            None,
            &[Panel::Heatmap(bad)],
            1,
            (300, 200)
        )
        .is_err());
    }
}
