//! Figures with plotters: every figure is drawn from exported data (CSV/JSON) and written as
//! both PNG and SVG. Text uses the DejaVu Sans font embedded in the binary (no system fonts).
//!
//! Both files are rendered in memory and written atomically ([`crate::io::write_atomic`]), so
//! an interrupted run never leaves half a picture. Axis ranges are sanitised before drawing,
//! so any data gives a bounded amount of work: non-finite points (and non-positive ones on a
//! log axis) are dropped, values are clipped to $|v|\le10^{300}$ (log axes: $[10^{-300},10^{300}]$,
//! which also removes subnormals), a log axis shows at most [`MAX_DECADES`] decades (the top
//! ones; smaller values are drawn on the bottom edge), and a zero-width range is widened. Each
//! such change is written as a note in the figure's bottom-left corner and returned by
//! [`chart_notes`].

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

/// Something that draws itself on any plotters drawing area (one impl per figure kind), so
/// the same code renders the PNG and the SVG.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Renders `fig` (`size` pixels) to PNG and SVG bytes in memory and writes `<stem>.png` and
/// `<stem>.svg` atomically; returns both paths.
fn save_figure(stem: &Path, size: (u32, u32), fig: &impl Figure) -> Result<(PathBuf, PathBuf)> {
    ensure_fonts()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let (w, h) = size;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        fig.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(plot_err)?;
        wr.write_image_data(&rgb).map_err(plot_err)?;
        wr.finish().map_err(plot_err)?;
    }
    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, size).into_drawing_area();
        fig.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    crate::io::write_atomic(&png, &png_bytes)?;
    crate::io::write_atomic(&svg, svg_text.as_bytes())?;
    Ok((png, svg))
}

struct LineFig<'a>(&'a LineChart);

impl Figure for LineFig<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_line_chart(root, self.0)
    }
}

/// Writes `<stem>.png` (900×600) and `<stem>.svg` (atomically); returns both paths.
pub fn save_line_chart(stem: &Path, chart: &LineChart) -> Result<(PathBuf, PathBuf)> {
    save_figure(stem, (900, 600), &LineFig(chart))
}

/// Largest magnitude drawn on a linear axis; larger values are clipped to $\pm10^{300}$.
pub const LINEAR_LIMIT: f64 = 1e300;
/// Most decades a log axis shows (the top ones).
pub const MAX_DECADES: i32 = 40;
/// Exponent range of log axes: values are clipped to $[10^{-300},10^{300}]$.
const LOG_EXP_LIMIT: i32 = 300;

/// A chart's points after sanitising, with the axis ranges and notes on what was changed.
struct Prepared {
    /// Points per series, in drawing coordinates (clipped).
    series: Vec<Vec<(f64, f64)>>,
    /// All points.
    pts: Vec<(f64, f64)>,
    x: (f64, f64),
    /// Linear: the data range (unpadded); log: $(10^{lo},10^{hi})$.
    y: (f64, f64),
    notes: Vec<String>,
}

/// Widens a zero-width (or, relative to its magnitude, vanishing) range.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let m = lo.abs().max(hi.abs());
    if hi > lo && hi - lo >= 1e-9 * m {
        return (lo, hi);
    }
    let c = 0.5 * lo + 0.5 * hi;
    let w = if hi > lo {
        1e-9 * m
    } else {
        0.5f64.max(1e-6 * m)
    };
    (c - w, c + w)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn prepare(chart: &LineChart) -> Result<Prepared> {
    let (mut non_finite, mut non_positive, mut clipped) = (0usize, 0usize, 0usize);
    let clip = |v: f64, lo: f64, hi: f64, n: &mut usize| {
        if v < lo {
            *n += 1;
            lo
        } else if v > hi {
            *n += 1;
            hi
        } else {
            v
        }
    };
    let (ylo, yhi) = if chart.log_y {
        (10f64.powi(-LOG_EXP_LIMIT), 10f64.powi(LOG_EXP_LIMIT))
    } else {
        (-LINEAR_LIMIT, LINEAR_LIMIT)
    };
    let mut series: Vec<Vec<(f64, f64)>> = Vec::with_capacity(chart.series.len());
    for s in &chart.series {
        let mut v = Vec::with_capacity(s.points.len());
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                non_finite += 1;
                continue;
            }
            if chart.log_y && y <= 0.0 {
                non_positive += 1;
                continue;
            }
            let x = clip(x, -LINEAR_LIMIT, LINEAR_LIMIT, &mut clipped);
            let y = clip(y, ylo, yhi, &mut clipped);
            v.push((x, y));
        }
        series.push(v);
    }
    let pts: Vec<(f64, f64)> = series.iter().flatten().copied().collect();
    if pts.is_empty() {
        return Err(Error::Data(format!(
            "nothing to plot in `{}`: no finite points{}",
            chart.title,
            if chart.log_y {
                " (a log axis also needs values > 0)"
            } else {
                ""
            }
        )));
    }
    let range = |f: fn(&(f64, f64)) -> f64| {
        pts.iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            })
    };
    let (x0, x1) = range(|p| p.0);
    let x = widen(x0, x1);
    let (y0, y1) = range(|p| p.1);
    let mut notes = Vec::new();
    if non_finite > 0 {
        notes.push(format!(
            "{} dropped",
            plural(non_finite, "non-finite point", "non-finite points")
        ));
    }
    if non_positive > 0 {
        notes.push(format!(
            "{} dropped (log axis)",
            plural(non_positive, "value <= 0", "values <= 0")
        ));
    }
    if clipped > 0 {
        notes.push(format!(
            "{} clipped to {}",
            plural(clipped, "value", "values"),
            if chart.log_y {
                "[1e-300, 1e300]"
            } else {
                "+-1e300"
            }
        ));
    }
    let y = if chart.log_y {
        // exponents of the decades that hold the data, within the clip range
        let mut hi = (y1.log10().ceil() as i32).clamp(-LOG_EXP_LIMIT, LOG_EXP_LIMIT);
        let mut lo = (y0.log10().floor() as i32).clamp(-LOG_EXP_LIMIT, LOG_EXP_LIMIT);
        if hi <= lo {
            if lo > -LOG_EXP_LIMIT {
                lo -= 1;
            } else {
                hi += 1;
            }
        }
        if hi - lo > MAX_DECADES {
            lo = hi - MAX_DECADES;
            let floor = 10f64.powi(lo);
            let below = pts.iter().filter(|p| p.1 < floor).count();
            for s in &mut series {
                for p in s.iter_mut() {
                    p.1 = p.1.max(floor);
                }
            }
            notes.push(format!(
                "{} below 1e{lo} drawn on the bottom edge (the axis shows {MAX_DECADES} decades)",
                plural(below, "value", "values")
            ));
        }
        (10f64.powi(lo), 10f64.powi(hi))
    } else {
        widen(y0, y1)
    };
    let pts = series.iter().flatten().copied().collect();
    Ok(Prepared {
        series,
        pts,
        x,
        y,
        notes,
    })
}

/// Whether `chart` has a point to draw (finite, and positive on a log axis);
/// [`save_line_chart`] refuses a chart without one.
pub fn has_points(chart: &LineChart) -> bool {
    prepare(chart).is_ok()
}

/// What sanitising `chart` changes (dropped, clipped or floored points), one sentence each;
/// empty when the data are drawn as given. The same notes are written in the figure.
pub fn chart_notes(chart: &LineChart) -> Vec<String> {
    prepare(chart).map(|p| p.notes).unwrap_or_default()
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
    let prep = prepare(chart)?;
    let pts = &prep.pts;
    let ((x0, x1), (y0, y1)) = (prep.x, prep.y);
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
            for (i, (s, p)) in chart.series.iter().zip(&prep.series).enumerate() {
                let p = p.clone();
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
        finish!(cb
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(plot_err)?);
    } else {
        let pad = 0.05 * (y1 - y0);
        finish!(cb
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(plot_err)?);
    }
    if !prep.notes.is_empty() {
        let (_, h) = root.dim_in_pixel();
        let style = TextStyle::from(("sans-serif", 13).into_font()).color(&RGBColor(90, 90, 90));
        root.draw_text(
            &format!("note: {}", prep.notes.join("; ")),
            &style,
            (6, h as i32 - 16),
        )
        .map_err(plot_err)?;
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

struct PanelsFig<'a> {
    title: Option<&'a str>,
    panels: &'a [Panel],
    rows: usize,
    cols: usize,
}

impl Figure for PanelsFig<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(plot_err)?;
        let body = match self.title {
            Some(t) => root
                .titled(t, ("sans-serif", 28).into_font().style(FontStyle::Bold))
                .map_err(plot_err)?,
            None => root.clone(),
        };
        for (area, p) in body
            .split_evenly((self.rows, self.cols))
            .iter()
            .zip(self.panels)
        {
            draw_panel(area, p)?;
        }
        Ok(())
    }
}

/// Writes a figure of `panels` on a grid with `cols` columns, each panel `panel_size` pixels,
/// as `<stem>.png` and `<stem>.svg` (atomically), with an optional overall title.
pub fn save_panels(
    stem: &Path,
    title: Option<&str>,
    panels: &[Panel],
    cols: usize,
    panel_size: (u32, u32),
) -> Result<(PathBuf, PathBuf)> {
    if panels.is_empty() {
        return Err(Error::Data("a figure needs at least one panel".into()));
    }
    let cols = cols.clamp(1, panels.len());
    let rows = panels.len().div_ceil(cols);
    let head = if title.is_some() { 44 } else { 0 };
    let dim = |per: u32, n: usize, extra: u32| {
        u32::try_from(n)
            .ok()
            .and_then(|n| per.checked_mul(n))
            .and_then(|v| v.checked_add(extra))
            .filter(|&v| v <= 1 << 15)
            .ok_or_else(|| Error::Data(format!("a figure of {rows} x {cols} panels is too large")))
    };
    let size = (dim(panel_size.0, cols, 0)?, dim(panel_size.1, rows, head)?);
    save_figure(
        stem,
        size,
        &PanelsFig {
            title,
            panels,
            rows,
            cols,
        },
    )
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
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // written atomically: only the two files, no temporaries
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
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

    fn chart(log_y: bool, points: Vec<(f64, f64)>) -> LineChart {
        LineChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_y,
            series: vec![Series {
                name: "s".into(),
                points,
            }],
        }
    }

    /// Data that used to make plotters loop forever (log axes up to 1e308, subnormals, spans
    /// of hundreds of decades, zero-width ranges, huge linear values) give finite, bounded
    /// ranges: positive normal decades at most MAX_DECADES apart on log axes, |v| <= 1e300 with
    /// a non-zero width on linear ones; and every change is noted.
    #[test]
    fn axis_ranges_are_sanitised() {
        let log_cases = [
            vec![(0.0, 1e308), (1.0, 1.0)],
            vec![(0.0, f64::MAX), (1.0, 5e-324)],
            vec![(0.0, 1e-300), (1.0, 1e300)],
            vec![(0.0, 5e-324)],
            vec![(0.0, 2.5), (0.0, 2.5)],
            vec![(-1e308, 1.0), (1e308, 2.0), (f64::NAN, 1.0), (1.0, -1.0)],
        ];
        for pts in log_cases {
            let p = prepare(&chart(true, pts.clone())).unwrap();
            let (lo, hi) = p.y;
            assert!(
                lo.is_normal() && hi.is_normal() && lo < hi,
                "{pts:?}: {lo} {hi}"
            );
            let decades = (hi / lo).log10();
            assert!(decades <= MAX_DECADES as f64 + 1e-9, "{pts:?}: {decades}");
            assert!(
                p.x.0.is_finite() && p.x.1.is_finite() && p.x.0 < p.x.1,
                "{pts:?}"
            );
            assert!(p.x.1 - p.x.0 <= 2.0 * LINEAR_LIMIT + 1.0);
            assert!(
                p.pts.iter().all(|q| q.1 >= lo && q.1 <= hi),
                "{pts:?}: points inside the axis"
            );
        }
        let notes = chart_notes(&chart(
            true,
            vec![(0.0, 1e-300), (1.0, 1e300), (2.0, f64::NAN)],
        ));
        assert!(notes.iter().any(|n| n.contains("non-finite")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("bottom edge")), "{notes:?}");
        let notes = chart_notes(&chart(true, vec![(0.0, 5e-324), (1.0, 1.0)]));
        assert!(notes.iter().any(|n| n.contains("clipped")), "{notes:?}");
        assert!(chart_notes(&chart(true, vec![(0.0, 1e-3), (1.0, 1.0)])).is_empty());
        for pts in [
            vec![(0.0, f64::MAX), (1.0, -f64::MAX)],
            vec![(0.0, 1e300), (1.0, 1e300)],
            vec![(0.0, 1.0), (0.0, 1.0 + f64::EPSILON)],
            vec![(5.0, 0.0)],
        ] {
            let p = prepare(&chart(false, pts.clone())).unwrap();
            let (lo, hi) = p.y;
            let pad = 0.05 * (hi - lo);
            assert!((lo - pad).is_finite() && (hi + pad).is_finite(), "{pts:?}");
            assert!(
                hi - lo >= 1e-9 * lo.abs().max(hi.abs()) && hi > lo,
                "{pts:?}"
            );
        }
        assert!(prepare(&chart(true, vec![(0.0, -1.0), (1.0, 0.0)])).is_err());
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
