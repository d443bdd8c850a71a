//! How a result's array columns are drawn, read from the query: each output's shape (a mean
//! image keeps its detector's shape), the x axis of 1-D profiles (`radial`'s ring radii,
//! `projection`'s pixel index), and the ROI rectangles and rings its functions use on images.
//! The kernel hands this to the widgets; nothing here touches data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{Expr, FunctionArgExpr, SelectItem, SetExpr, Statement, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::arrays::Shapes;
use crate::live::output_name;
use crate::rewrite::{function_args, quote_dotted_names};

/// The x axis of a 1-D array column: bin `i` is at `start + i · step`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Axis {
    pub label: String,
    pub start: f64,
    pub step: f64,
}

/// A shape drawn over an image, in the image's pixels (row r, column c).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Overlay {
    /// Rows `r0 ≤ r < r1`, columns `c0 ≤ c < c1`.
    Rect {
        r0: f64,
        r1: f64,
        c0: f64,
        c1: f64,
        label: String,
    },
    /// Centre column `cx`, row `cy`, radius `r`.
    Ring {
        cx: f64,
        cy: f64,
        r: f64,
        label: String,
    },
}

/// What a query's result columns look like beyond their Arrow type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    /// Output column → shape, for outputs holding arrays of two or more dimensions.
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub axes: BTreeMap<String, Axis>,
    /// Output column holding arrays → the input array column they come from (`mean_image` →
    /// `jungfrau.raw.image`): its overlays are drawn on the output.
    pub sources: BTreeMap<String, String>,
    /// Image column the query reads (e.g. `jungfrau.raw.image`) → what its functions mark on it.
    pub overlays: BTreeMap<String, Vec<Overlay>>,
}

/// The layout of `sql`'s SELECT list, the input array columns having `shapes`. Anything it
/// cannot read (not a SELECT, a syntax error) has no layout: the widgets then choose from the
/// Arrow types alone.
pub fn layout(sql: &str, shapes: &Shapes) -> Layout {
    let mut out = Layout::default();
    let quoted = quote_dotted_names(sql, &|c| {
        shapes.contains_key(c) || c.ends_with(".image") || c.ends_with(".calib")
    })
    .sql;
    let Ok(mut stmts) = Parser::parse_sql(&GenericDialect {}, &quoted) else {
        return out;
    };
    let Some(Statement::Query(q)) = stmts.pop() else {
        return out;
    };
    let SetExpr::Select(select) = *q.body else {
        return out;
    };
    for item in &select.projection {
        let (expr, name) = match item {
            SelectItem::UnnamedExpr(e) => (e, output_name(e)),
            SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
            _ => continue,
        };
        if let Some(shape) = shape_of(expr, shapes).filter(|s| s.len() >= 2) {
            out.shapes.insert(name.clone(), shape);
        }
        if let Some(src) = source_of(expr) {
            out.sources.insert(name.clone(), src);
        }
        if let Some(axis) = axis_of(expr) {
            out.axes.insert(name.clone(), axis);
        }
        marks(expr, &name, &mut out.overlays);
    }
    if let Some(w) = &select.selection {
        marks(w, "WHERE", &mut out.overlays);
    }
    out
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
        Expr::Nested(e) => column_name(e),
        _ => None,
    }
}

fn call(e: &Expr) -> Option<(String, Vec<Expr>)> {
    let Expr::Function(f) = e else { return None };
    let args = function_args(f)
        .into_iter()
        .filter_map(|a| {
            if let FunctionArgExpr::Expr(e) = a {
                Some(e)
            } else {
                None
            }
        })
        .collect();
    Some((f.name.to_string().to_ascii_lowercase(), args))
}

/// The shape of the arrays `e` yields per row (or per group).
fn shape_of(e: &Expr, shapes: &Shapes) -> Option<Vec<usize>> {
    if let Some(c) = column_name(e) {
        return shapes.get(&c).cloned();
    }
    match e {
        Expr::Nested(e) => shape_of(e, shapes),
        Expr::Cast { expr, .. } => shape_of(expr, shapes),
        _ => {
            let (f, args) = call(e)?;
            match f.as_str() {
                // Element-wise: the input's shape.
                "sum" | "avg" | "mean" | "min" | "max" | "first" | "last" | "threshold"
                | "mask" => shape_of(args.first()?, shapes),
                _ => None,
            }
        }
    }
}

/// The input column of an element-wise expression.
fn source_of(e: &Expr) -> Option<String> {
    column_name(e).or_else(|| match e {
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => source_of(e),
        _ => {
            let (f, args) = call(e)?;
            matches!(
                f.as_str(),
                "sum" | "avg" | "mean" | "min" | "max" | "first" | "last" | "threshold" | "mask"
            )
            .then(|| source_of(args.first()?))?
        }
    })
}

fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => number(expr).map(|v| -v),
        Expr::Nested(e) => number(e),
        _ => None,
    }
}

fn numbers(args: &[Expr]) -> Option<Vec<f64>> {
    args.iter().map(number).collect()
}

/// The x axis of a 1-D result: `radial`'s ring centres, `projection`'s pixel index.
fn axis_of(e: &Expr) -> Option<Axis> {
    let (f, args) = call(e)?;
    match f.as_str() {
        "sum" | "avg" | "mean" | "min" | "max" | "first" | "last" => axis_of(args.first()?),
        "radial" if args.len() == 6 => {
            let v = numbers(&args[1..])?;
            let (rmin, rmax, nbins) = (v[2], v[3], v[4]);
            let step = (rmax - rmin) / nbins;
            Some(Axis {
                label: "radius (pixels)".into(),
                start: rmin + step / 2.0,
                step,
            })
        }
        "radial_q" if args.len() >= 8 => {
            let v = numbers(&args[1..])?;
            let (qmin, qmax, nbins) = (v[4], v[5], v[6]);
            let step = (qmax - qmin) / nbins;
            Some(Axis {
                label: "q (1/Å)".into(),
                start: qmin + step / 2.0,
                step,
            })
        }
        "projection" => {
            let v = numbers(args.get(1..)?)?;
            match v[..] {
                [axis] => Some(Axis {
                    label: if axis == 0.0 { "column" } else { "row" }.into(),
                    start: 0.0,
                    step: 1.0,
                }),
                [axis, r0, _, c0, _] => Some(if axis == 0.0 {
                    Axis {
                        label: "column".into(),
                        start: c0,
                        step: 1.0,
                    }
                } else {
                    Axis {
                        label: "row".into(),
                        start: r0,
                        step: 1.0,
                    }
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Collects the ROIs and rings of array functions over images anywhere in `e`.
fn marks(e: &Expr, output: &str, into: &mut BTreeMap<String, Vec<Overlay>>) {
    let mut visit = |e: &Expr| {
        let Some((f, args)) = call(e) else { return };
        let Some(image) = args
            .first()
            .and_then(|a| column_name(a).or_else(|| inner_column(a)))
        else {
            return;
        };
        let Some(v) = numbers(&args[1..]) else { return };
        let label = format!("{output}: {f}");
        let found = match (f.as_str(), &v[..]) {
            ("roi_sum" | "roi_mean" | "roi_max" | "projection", [r0, r1, c0, c1])
            | ("roi_count", [r0, r1, c0, c1, _]) => {
                vec![Overlay::Rect {
                    r0: *r0,
                    r1: *r1,
                    c0: *c0,
                    c1: *c1,
                    label,
                }]
            }
            ("projection", [_, r0, r1, c0, c1]) => vec![Overlay::Rect {
                r0: *r0,
                r1: *r1,
                c0: *c0,
                c1: *c1,
                label,
            }],
            ("radial", [cx, cy, rmin, rmax, _]) => vec![
                Overlay::Ring {
                    cx: *cx,
                    cy: *cy,
                    r: *rmin,
                    label: label.clone(),
                },
                Overlay::Ring {
                    cx: *cx,
                    cy: *cy,
                    r: *rmax,
                    label,
                },
            ],
            _ => return,
        };
        let list = into.entry(image).or_default();
        for o in found {
            if !list.contains(&o) {
                list.push(o);
            }
        }
    };
    walk(e, &mut visit);
}

/// The array column under element-wise wrappers (`roi_sum(threshold(img, 0), …)` marks `img`).
fn inner_column(e: &Expr) -> Option<String> {
    let (f, args) = call(e)?;
    matches!(f.as_str(), "threshold" | "mask").then(|| {
        args.first()
            .and_then(|a| column_name(a).or_else(|| inner_column(a)))
    })?
}

fn walk(e: &Expr, visit: &mut dyn FnMut(&Expr)) {
    visit(e);
    match e {
        Expr::Function(_) => {
            if let Some((_, args)) = call(e) {
                for a in &args {
                    walk(a, visit);
                }
            }
        }
        Expr::BinaryOp { left, right, .. } => {
            walk(left, visit);
            walk(right, visit);
        }
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::Cast { expr, .. } => {
            walk(expr, visit)
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            walk(expr, visit);
            walk(low, visit);
            walk(high, visit);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> Shapes {
        Shapes::from([
            ("jungfrau.raw.image".to_string(), vec![514, 1030]),
            ("jungfrau.raw.calib".to_string(), vec![1, 512, 1024]),
        ])
    }

    #[test]
    fn shapes_axes_and_overlays_from_the_select_list() {
        let sql = "SELECT bin(delay, 0.1) AS d, avg(jungfrau.raw.image) AS mean_image, max(threshold(jungfrau.raw.calib, 5)),
                   avg(radial(jungfrau.raw.image, 515, 257, 10, 210, 40)) AS profile, sum(roi_sum(jungfrau.raw.image, 100, 140, 200, 260)) AS roi
                   FROM events WHERE roi_max(jungfrau.raw.image, 0, 10, 0, 20) > 3 GROUP BY 1";
        let l = layout(sql, &shapes());
        assert_eq!(l.shapes.get("mean_image"), Some(&vec![514, 1030]));
        assert_eq!(
            l.sources.get("mean_image").map(String::as_str),
            Some("jungfrau.raw.image")
        );
        assert_eq!(
            l.shapes.get("threshold"),
            Some(&vec![1, 512, 1024]),
            "unaliased: the live query's name for it"
        );
        assert!(!l.shapes.contains_key("profile") && !l.shapes.contains_key("d"));
        assert_eq!(
            l.axes.get("profile"),
            Some(&Axis {
                label: "radius (pixels)".into(),
                start: 12.5,
                step: 5.0
            })
        );
        let marks = &l.overlays["jungfrau.raw.image"];
        assert_eq!(marks.len(), 4, "{marks:?}");
        assert!(marks.contains(&Overlay::Rect {
            r0: 100.0,
            r1: 140.0,
            c0: 200.0,
            c1: 260.0,
            label: "roi: roi_sum".into()
        }));
        assert!(marks.contains(&Overlay::Ring {
            cx: 515.0,
            cy: 257.0,
            r: 210.0,
            label: "profile: radial".into()
        }));
        assert!(marks.contains(&Overlay::Rect {
            r0: 0.0,
            r1: 10.0,
            c0: 0.0,
            c1: 20.0,
            label: "WHERE: roi_max".into()
        }));
        // Not SQL: no layout, no panic.
        assert_eq!(layout("SELEC nothing", &shapes()), Layout::default());
    }
}

