//! Charts as SVG, drawn on the server with plotters. Each chart has a title for assistive
//! technology, and every page that shows one also shows its numbers in a table.

use plotters::prelude::*;

const BLUE: RGBColor = RGBColor(29, 112, 184);
const GREY: RGBColor = RGBColor(80, 90, 95);
const ORANGE: RGBColor = RGBColor(182, 72, 0);

/// Gives the SVG an accessible name and makes it scale to its container.
fn accessible(svg: String, title: &str) -> String {
    let title = askama_escape(title);
    match svg.find('>') {
        Some(i) => {
            let (open, rest) = svg.split_at(i);
            format!("{open} role=\"img\" aria-label=\"{title}\" class=\"chart\"><title>{title}</title>{}", &rest[1..])
        }
        None => svg,
    }
}

fn askama_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Attendance (0–1) over terms, as a line with points.
pub fn attendance(points: &[(String, Option<f64>)], title: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 220)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let n = points.len().max(1);
        let labels: Vec<String> = points.iter().map(|(l, _)| l.clone()).collect();
        let chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..(n as f64 - 0.5).max(0.5), 0.5f64..1.0);
        if let Ok(mut chart) = chart {
            let _ = chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n.min(9))
                .x_label_formatter(&|x| {
                    let i = x.round() as usize;
                    if (x - x.round()).abs() < 0.01 {
                        labels.get(i).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_labels(6)
                .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
                .label_style(("sans-serif", 12).into_font().color(&GREY))
                .draw();
            let pts: Vec<(f64, f64)> =
                points.iter().enumerate().filter_map(|(i, (_, v))| v.map(|v| (i as f64, v.clamp(0.5, 1.0)))).collect();
            let _ = chart.draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)));
            let _ = chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())));
            // The persistent-absence line: attendance below 90%.
            let _ = chart.draw_series(LineSeries::new(
                vec![(0.0, 0.9), ((n as f64 - 0.5).max(0.5), 0.9)],
                ORANGE.stroke_width(1),
            ));
        }
        let _ = root.present();
    }
    accessible(svg, title)
}

/// Reliability: mean predicted probability against the observed rate, per bin, with the
/// diagonal of perfect calibration.
pub fn reliability(bins: &[(f64, f64)], title: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (320, 300)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let top = bins.iter().flat_map(|(p, o)| [*p, *o]).fold(0.1f64, f64::max).min(1.0);
        let top = (top * 1.1).min(1.0);
        if let Ok(mut chart) = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..top, 0f64..top)
        {
            let _ = chart
                .configure_mesh()
                .x_desc("predicted")
                .y_desc("observed")
                .x_labels(5)
                .y_labels(5)
                .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
                .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
                .label_style(("sans-serif", 12).into_font().color(&GREY))
                .draw();
            let _ = chart.draw_series(LineSeries::new(vec![(0.0, 0.0), (top, top)], GREY.stroke_width(1)));
            let _ = chart.draw_series(LineSeries::new(bins.to_vec(), BLUE.stroke_width(2)));
            let _ = chart.draw_series(bins.iter().map(|p| Circle::new(*p, 4, BLUE.filled())));
        }
        let _ = root.present();
    }
    accessible(svg, title)
}

/// Horizontal bars, one per (label, value in 0–1), labelled at their left.
pub fn bars(items: &[(String, f64)], title: &str) -> String {
    let mut svg = String::new();
    {
        let h = (44 + 26 * items.len().max(1)) as u32;
        let root = SVGBackend::with_string(&mut svg, (600, h)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max = items.iter().map(|(_, v)| *v).fold(0.05f64, f64::max).min(1.0) * 1.1;
        let n = items.len().max(1);
        // The left 45% of the plot holds the labels.
        let left = -max * 0.8;
        if let Ok(mut chart) = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(0)
            .build_cartesian_2d(left..max, 0f64..n as f64)
        {
            let _ = chart
                .configure_mesh()
                .disable_y_mesh()
                .disable_x_mesh()
                .y_labels(0)
                .x_labels(8)
                .x_label_formatter(&|x| if *x >= 0.0 { format!("{:.0}%", x * 100.0) } else { String::new() })
                .label_style(("sans-serif", 12).into_font().color(&GREY))
                .draw();
            let style = ("sans-serif", 13).into_font().color(&BLACK);
            let _ = chart.draw_series(items.iter().enumerate().map(|(i, (l, _))| {
                let y = (n - 1 - i) as f64 + 0.75;
                let l: String = l.chars().take(34).collect();
                Text::new(l, (left * 0.98, y), style.clone())
            }));
            let _ = chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
                let y = (n - 1 - i) as f64;
                Rectangle::new([(0.0, y + 0.2), (v.max(0.0), y + 0.8)], BLUE.filled())
            }));
        }
        let _ = root.present();
    }
    accessible(svg, title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_named_svg_and_escape_their_text() {
        let svg = bars(&[("<script>alert(1)</script>".into(), 0.5), ("b & c".into(), 0.25)], "Rates \"by\" <group>");
        assert!(svg.starts_with("<svg") && svg.contains("role=\"img\""));
        assert!(svg.contains("<title>Rates &quot;by&quot; &lt;group&gt;</title>"));
        assert!(!svg.contains("<script>"), "labels are escaped");
        let a =
            attendance(&[("aut 24".into(), Some(0.95)), ("spr 25".into(), None), ("sum 25".into(), Some(0.8))], "t");
        assert!(a.contains("<circle") && a.contains("aut 24"));
        let r = reliability(&[(0.1, 0.12), (0.5, 0.45)], "t");
        assert!(r.contains("<polyline") || r.contains("<path"));
    }
}
