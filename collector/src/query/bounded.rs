//! Functions that can build an unbounded value from a small query are given a size check.
//!
//! DataFusion's memory pool sees sorts, joins and aggregations, not the arrays a scalar function
//! returns: `SELECT repeat('x', 60000000) FROM generate_series(1, 30)` builds 1.8 GB in one batch
//! before any result check can look at it. Each function here is wrapped so that it works out the
//! size of its output from its arguments and refuses, before building anything, past
//! `query.max_result_bytes`.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// How one function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: the text's bytes `n` times.
    Repeat,
    /// `lpad(text, n, ...)`, `rpad`: `n` characters of up to four bytes.
    Pad,
    /// `array_repeat(element, n)`: `n` elements.
    ArrayRepeat,
    /// `range(start, stop[, step])`, `generate_series`: one 8-byte element per step.
    Series,
}

const BOUNDED: [(&str, Growth); 6] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
];

/// Replaces the built-in functions above in `ctx` with versions that refuse to build more than
/// `max_bytes` in one call.
pub fn install(ctx: &SessionContext, max_bytes: u64) {
    for (name, growth) in BOUNDED {
        // A feature left out of the build leaves its functions out; nothing to bound then.
        if let Ok(inner) = ctx.udf(name) {
            let signature = Signature {
                volatility: Volatility::Volatile,
                ..inner.signature().clone()
            };
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: inner.as_ref().clone(),
                signature,
                growth,
                max_bytes,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    /// The inner function's, but volatile: a constant call folded at planning time is checked
    /// for one row and then copied into every row of the batch, past any check.
    signature: Signature,
    growth: Growth,
    max_bytes: u64,
}

impl Bounded {
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows.max(1);
        let arg = |i: usize| args.args.get(i);
        let bytes = match self.growth {
            Growth::Repeat => {
                let (Some(text), Some(times)) = (arg(0), arg(1)) else {
                    return Ok(());
                };
                weighted_sum(&counts(times, rows)?, &text_bytes(text, rows))
            }
            Growth::Pad => {
                let Some(width) = arg(1) else {
                    return Ok(());
                };
                weighted_sum(&counts(width, rows)?, &vec![4; rows])
            }
            Growth::ArrayRepeat => {
                let (Some(element), Some(times)) = (arg(0), arg(1)) else {
                    return Ok(());
                };
                let width = element.data_type().primitive_width().unwrap_or(16) as u64;
                let mut sizes = text_bytes(element, rows);
                sizes.iter_mut().for_each(|size| *size = (*size).max(width));
                weighted_sum(&counts(times, rows)?, &sizes)
            }
            Growth::Series => {
                // Integer series only: dates and timestamps step by intervals, whose length in
                // steps this cannot know without evaluating them.
                if args.args.is_empty() || !args.args.iter().all(|v| v.data_type().is_integer()) {
                    return Ok(());
                }
                let (start, stop, step) = match args.args.as_slice() {
                    [stop] => (vec![0; rows], counts(stop, rows)?, vec![1; rows]),
                    [start, stop] => (counts(start, rows)?, counts(stop, rows)?, vec![1; rows]),
                    [start, stop, step, ..] => (
                        counts(start, rows)?,
                        counts(stop, rows)?,
                        counts(step, rows)?,
                    ),
                    [] => return Ok(()),
                };
                (0..rows)
                    .map(|row| {
                        let by = step[row].unsigned_abs().max(1);
                        (stop[row].abs_diff(start[row]) / by)
                            .saturating_add(1)
                            .saturating_mul(8)
                    })
                    .fold(0u64, u64::saturating_add)
            }
        };
        if bytes > self.max_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build {bytes} bytes in one call, more than the {} a result may hold (query.max_result_bytes)",
                self.inner.name(),
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// Each row's count as an i64 (nulls count as zero), without expanding a constant into an array.
fn counts(value: &ColumnarValue, rows: usize) -> Result<Vec<i64>> {
    let array = match value {
        ColumnarValue::Scalar(scalar) => scalar.to_array_of_size(1)?,
        ColumnarValue::Array(array) => array.clone(),
    };
    let as_i64 = arrow::compute::cast(&array, &DataType::Int64)?;
    let values = as_i64.as_primitive::<Int64Type>();
    let at = |i: usize| {
        if values.is_null(i) {
            0
        } else {
            values.value(i)
        }
    };
    Ok(match value {
        ColumnarValue::Scalar(_) => vec![at(0); rows],
        ColumnarValue::Array(_) => (0..values.len()).map(at).collect(),
    })
}

/// Each row's string or binary length in bytes (zero for other types and nulls), without
/// copying a constant: a 1 MB literal over 8,192 rows must not become 8 GB here either.
fn text_bytes(value: &ColumnarValue, rows: usize) -> Vec<u64> {
    match value {
        ColumnarValue::Scalar(scalar) => {
            let length = match scalar {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => s.len(),
                ScalarValue::Binary(Some(b))
                | ScalarValue::LargeBinary(Some(b))
                | ScalarValue::BinaryView(Some(b)) => b.len(),
                _ => 0,
            };
            vec![length as u64; rows]
        }
        ColumnarValue::Array(array) => (0..array.len())
            .map(|row| array_text_bytes(array, row))
            .collect(),
    }
}

fn array_text_bytes(array: &ArrayRef, row: usize) -> u64 {
    if array.is_null(row) {
        return 0;
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).len() as u64,
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).len() as u64,
        DataType::Utf8View => array.as_string_view().value(row).len() as u64,
        DataType::Binary => array.as_binary::<i32>().value(row).len() as u64,
        DataType::LargeBinary => array.as_binary::<i64>().value(row).len() as u64,
        DataType::BinaryView => array.as_binary_view().value(row).len() as u64,
        _ => 0,
    }
}

/// Σ max(count, 0) × size, saturating.
fn weighted_sum(counts: &[i64], sizes: &[u64]) -> u64 {
    counts
        .iter()
        .zip(sizes)
        .map(|(&n, &size)| (n.max(0) as u64).saturating_mul(size))
        .fold(0u64, u64::saturating_add)
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }
}
