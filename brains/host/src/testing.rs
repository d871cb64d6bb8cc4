//! Test support: the workspace's `build/` outputs, and tiny ONNX models
//! written byte by byte (so unit tests need no model-building tool).

use crate::runtime;
use sios_ipc::Tensor;
use std::path::{Path, PathBuf};

/// `build/` at the workspace root, where deploy/setup.sh puts the ONNX
/// Runtime library, the models and the reference fixtures.
pub fn build_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build")
}

/// Loads ONNX Runtime from `build/lib`. Returns `None` (after a loud
/// `SKIPPED` line) only when `build/` does not exist and `CI` is unset; in CI a
/// missing `build/` fails the test instead.
pub fn runtime_or_skip(test: &str) -> Option<()> {
    let build = build_dir();
    if !build.is_dir() {
        if in_ci() {
            panic!(
                "{test}: {} is missing; CI must run deploy/setup.sh before the tests",
                build.display()
            );
        }
        skipped(test, &build);
        return None;
    }
    let library = build.join("lib/libonnxruntime.so.1.32.0");
    if let Err(err) = runtime::init(&library) {
        panic!("{test}: {err}");
    }
    Some(())
}

/// Says loudly that `test` did not run. Written to the stderr handle itself,
/// not with `eprintln!`, which the test harness captures and hides for
/// passing tests.
pub fn skipped(test: &str, build: &Path) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {} is absent (run deploy/setup.sh to build it)",
        build.display()
    );
}

/// True when `CI` is set to something other than "" or "false" (deploy/test.sh
/// exports `CI=""` when it runs outside CI).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// ONNX `TensorProto.DataType` codes.
pub mod onnx_type {
    pub const FLOAT: u64 = 1;
    pub const UINT8: u64 = 2;
    pub const INT8: u64 = 3;
    pub const INT32: u64 = 6;
    pub const INT64: u64 = 7;
    pub const BOOL: u64 = 9;
    pub const FLOAT16: u64 = 10;
    pub const DOUBLE: u64 = 11;
}

/// One graph input and the output an `Identity` node copies it to.
pub struct Passthrough<'a> {
    pub input: &'a str,
    pub output: &'a str,
    pub elem_type: u64,
    /// `-1` is a dynamic dimension (written as a `dim_param`).
    pub shape: &'a [i64],
}

/// A serialised ONNX model (IR 8, opset 17) whose graph copies each input to
/// its output with `Identity`. Field numbers are those of onnx.proto3.
pub fn identity_model(pairs: &[Passthrough<'_>]) -> Vec<u8> {
    let mut graph = Vec::new();
    for pair in pairs {
        let mut node = Vec::new();
        bytes_field(1, pair.input.as_bytes(), &mut node); // NodeProto.input
        bytes_field(2, pair.output.as_bytes(), &mut node); // NodeProto.output
        bytes_field(4, b"Identity", &mut node); // NodeProto.op_type
        bytes_field(1, &node, &mut graph); // GraphProto.node
    }
    bytes_field(2, b"identity", &mut graph); // GraphProto.name
    for pair in pairs {
        bytes_field(
            11,
            &value_info(pair.input, pair.elem_type, pair.shape),
            &mut graph,
        ); // GraphProto.input
    }
    for pair in pairs {
        bytes_field(
            12,
            &value_info(pair.output, pair.elem_type, pair.shape),
            &mut graph,
        ); // GraphProto.output
    }
    let mut opset = Vec::new();
    bytes_field(1, b"", &mut opset); // OperatorSetIdProto.domain
    varint_field(2, 17, &mut opset); // OperatorSetIdProto.version
    let mut model = Vec::new();
    varint_field(1, 8, &mut model); // ModelProto.ir_version
    bytes_field(2, b"sios-brain tests", &mut model); // ModelProto.producer_name
    bytes_field(7, &graph, &mut model); // ModelProto.graph
    bytes_field(8, &opset, &mut model); // ModelProto.opset_import
    model
}

fn value_info(name: &str, elem_type: u64, shape: &[i64]) -> Vec<u8> {
    let mut dims = Vec::new();
    for (i, &dim) in shape.iter().enumerate() {
        let mut dimension = Vec::new();
        if dim < 0 {
            bytes_field(2, format!("d{i}").as_bytes(), &mut dimension); // Dimension.dim_param
        } else {
            varint_field(1, dim as u64, &mut dimension); // Dimension.dim_value
        }
        bytes_field(1, &dimension, &mut dims); // TensorShapeProto.dim
    }
    let mut tensor = Vec::new();
    varint_field(1, elem_type, &mut tensor); // TypeProto.Tensor.elem_type
    bytes_field(2, &dims, &mut tensor); // TypeProto.Tensor.shape (present even if empty: a scalar)
    let mut typ = Vec::new();
    bytes_field(1, &tensor, &mut typ); // TypeProto.tensor_type
    let mut info = Vec::new();
    bytes_field(1, name.as_bytes(), &mut info); // ValueInfoProto.name
    bytes_field(2, &typ, &mut info); // ValueInfoProto.type
    info
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(field: u64, value: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(value, out);
}

fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A tensor of each packed data type (named `bool`, `u8`, `i8`, `i32`, `i64`,
/// `f32`, `f64`) with values that catch lossy conversions: extremes, negative
/// zero, infinities, a NaN with a payload.
pub fn samples(shape: &[u64]) -> Vec<Tensor> {
    let n = shape.iter().product::<u64>() as usize;
    let index: Vec<usize> = (0..6).cycle().take(n).collect();
    let f32s = [
        0.1f32,
        -0.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::from_bits(0x7fc0_1234),
    ];
    let f64s = [
        0.1f64,
        -0.0,
        f64::MAX,
        5e-324,
        f64::NEG_INFINITY,
        f64::from_bits(0x7ff8_0000_dead_beef),
    ];
    let i64s = [i64::MIN, -1, 0, 1, i64::MAX, 1 << 53];
    let i32s = [i32::MIN, -1, 0, 1, i32::MAX, 1 << 24];
    let i8s = [i8::MIN, -1, 0, 1, i8::MAX, 42];
    let u8s = [0u8, 1, 127, 128, 255, 42];
    let bools = [false, true, true, false, false, true];
    fn pick<T: Copy>(table: &[T; 6], index: &[usize]) -> Vec<T> {
        index.iter().map(|&i| table[i]).collect()
    }
    let shape = shape.to_vec();
    vec![
        Tensor::from_elements("bool", shape.clone(), &pick(&bools, &index)),
        Tensor::from_elements("u8", shape.clone(), &pick(&u8s, &index)),
        Tensor::from_elements("i8", shape.clone(), &pick(&i8s, &index)),
        Tensor::from_elements("i32", shape.clone(), &pick(&i32s, &index)),
        Tensor::from_elements("i64", shape.clone(), &pick(&i64s, &index)),
        Tensor::from_elements("f32", shape.clone(), &pick(&f32s, &index)),
        Tensor::from_elements("f64", shape, &pick(&f64s, &index)),
    ]
}
