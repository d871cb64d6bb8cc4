//! Tensors on the wire, and their validation against a brain's declared inputs.
//!
//! A [`Tensor`] carries its element type, its shape and its data. Numeric data
//! travels as one packed little-endian byte string (`serde_bytes`), because
//! bincode encodes a `Vec<f32>` element by element and that halves throughput
//! for 64 KiB tensors (see DESIGN.md). Text travels as a list of byte strings.
//!
//! Validation happens twice: the kernel checks a request against the brain's
//! manifest before routing it (so a bad request never reaches a brain), and the
//! brain checks again before handing memory to ONNX Runtime (a brain trusts no
//! socket, not even the kernel's).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element types, named as in the Open Inference Protocol (KServe v2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Int8,
    Int32,
    Int64,
    Fp32,
    Fp64,
    /// Variable-length byte strings (UTF-8 text for brains that tokenise).
    Bytes,
}

impl DataType {
    /// Every data type, in a stable order (for help texts and errors).
    pub const ALL: [DataType; 8] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Int8,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The Open Inference Protocol name (`"FP32"`, `"INT64"`, `"BYTES"`, …).
    pub fn protocol_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Int8 => "INT8",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses an Open Inference Protocol name, case-insensitively.
    pub fn from_protocol_name(name: &str) -> Option<DataType> {
        DataType::ALL
            .into_iter()
            .find(|dt| dt.protocol_name().eq_ignore_ascii_case(name))
    }

    /// Bytes per element in packed form; `None` for [`DataType::Bytes`].
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.protocol_name())
    }
}

/// The elements of a tensor.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub enum TensorData {
    /// Packed little-endian elements of a fixed-size type.
    Packed(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One byte string per element, for [`DataType::Bytes`].
    Strings(Vec<serde_bytes::ByteBuf>),
}

impl fmt::Debug for TensorData {
    // Tensors can be megabytes; a log line should say how big, not dump them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorData::Packed(bytes) => write!(f, "Packed({} bytes)", bytes.len()),
            TensorData::Strings(items) => write!(f, "Strings({} items)", items.len()),
        }
    }
}

/// A named, typed, shaped tensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    /// Concrete dimensions; `[]` is a scalar (one element).
    pub shape: Vec<u64>,
    pub data: TensorData,
}

/// An upper bound of the bytes `tensors` take in a sios frame (bincode 1:
/// 8-byte lengths, 4-byte enum tags), without encoding them. Lets a brain
/// refuse a reply that no frame could carry before it tries to send it.
pub fn encoded_bytes_bound(tensors: &[Tensor]) -> usize {
    tensors
        .iter()
        .map(|t| {
            let data = match &t.data {
                TensorData::Packed(bytes) => bytes.len(),
                TensorData::Strings(items) => items.iter().map(|s| 8 + s.len()).sum::<usize>(),
            };
            tensor_header_bytes(&t.name, t.shape.len()) + data
        })
        .sum::<usize>()
        + 8
}

/// The bytes a tensor named `name` of `rank` dimensions takes in a sios
/// frame besides its data's own bytes: the name (with its length), the
/// datatype's tag, the shape (with its length), the data's tag and length.
pub fn tensor_header_bytes(name: &str, rank: usize) -> usize {
    8 + name.len() + 4 + 8 + 8 * rank + 4 + 8
}

/// Rust element types that map one-to-one onto a packed [`DataType`].
pub trait Element: Copy + Sized {
    const DATATYPE: DataType;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! numeric_element {
    ($ty:ty, $dt:expr) => {
        impl Element for $ty {
            const DATATYPE: DataType = $dt;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$ty>()];
                raw.copy_from_slice(bytes);
                <$ty>::from_le_bytes(raw)
            }
        }
    };
}
numeric_element!(u8, DataType::Uint8);
numeric_element!(i8, DataType::Int8);
numeric_element!(i32, DataType::Int32);
numeric_element!(i64, DataType::Int64);
numeric_element!(f32, DataType::Fp32);
numeric_element!(f64, DataType::Fp64);

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

impl Tensor {
    /// A tensor of packed numeric elements.
    pub fn from_elements<T: Element>(
        name: impl Into<String>,
        shape: Vec<u64>,
        values: &[T],
    ) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * T::DATATYPE.element_size().unwrap_or(1));
        for value in values {
            value.write_le(&mut bytes);
        }
        Tensor {
            name: name.into(),
            datatype: T::DATATYPE,
            shape,
            data: TensorData::Packed(bytes),
        }
    }

    /// A tensor of byte strings (e.g. UTF-8 text).
    pub fn from_strings<S: AsRef<[u8]>>(
        name: impl Into<String>,
        shape: Vec<u64>,
        values: &[S],
    ) -> Self {
        Tensor {
            name: name.into(),
            datatype: DataType::Bytes,
            shape,
            data: TensorData::Strings(
                values
                    .iter()
                    .map(|v| serde_bytes::ByteBuf::from(v.as_ref().to_vec()))
                    .collect(),
            ),
        }
    }

    /// Number of elements the shape describes, or `None` on overflow.
    pub fn element_count(&self) -> Option<u64> {
        element_count(&self.shape)
    }

    /// Checks that the data agrees with the declared type and shape.
    pub fn check_consistent(&self) -> Result<(), TensorError> {
        let count = self
            .element_count()
            .ok_or_else(|| TensorError::ShapeOverflow {
                name: self.name.clone(),
                shape: self.shape.clone(),
            })?;
        let (expected, got) = match (&self.data, self.datatype.element_size()) {
            (TensorData::Packed(bytes), Some(size)) => {
                let expected =
                    count
                        .checked_mul(size as u64)
                        .ok_or_else(|| TensorError::ShapeOverflow {
                            name: self.name.clone(),
                            shape: self.shape.clone(),
                        })?;
                (expected, bytes.len() as u64)
            }
            (TensorData::Strings(items), None) => (count, items.len() as u64),
            _ => {
                return Err(TensorError::DataKind {
                    name: self.name.clone(),
                    datatype: self.datatype,
                });
            }
        };
        if expected != got {
            return Err(TensorError::DataLength {
                name: self.name.clone(),
                datatype: self.datatype,
                shape: self.shape.clone(),
                expected,
                got,
            });
        }
        Ok(())
    }

    /// Decodes packed elements of type `T`.
    pub fn to_elements<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        if self.datatype != T::DATATYPE {
            return Err(TensorError::WrongDatatype {
                name: self.name.clone(),
                expected: T::DATATYPE,
                got: self.datatype,
            });
        }
        self.check_consistent()?;
        match &self.data {
            TensorData::Packed(bytes) => {
                let size = T::DATATYPE.element_size().unwrap_or(1);
                Ok(bytes.chunks_exact(size).map(T::read_le).collect())
            }
            TensorData::Strings(_) => Err(TensorError::DataKind {
                name: self.name.clone(),
                datatype: self.datatype,
            }),
        }
    }

    /// The byte strings of a [`DataType::Bytes`] tensor.
    pub fn strings(&self) -> Result<&[serde_bytes::ByteBuf], TensorError> {
        match &self.data {
            TensorData::Strings(items) if self.datatype == DataType::Bytes => Ok(items),
            _ => Err(TensorError::WrongDatatype {
                name: self.name.clone(),
                expected: DataType::Bytes,
                got: self.datatype,
            }),
        }
    }
}

/// SHA-256 over a set of tensors, independent of their order in the request:
/// what the audit log keys (per data subject) instead of the content itself.
///
/// Layout, per tensor in ascending name order, every integer little-endian:
/// `u64 name length, name, u64 datatype-name length, datatype name (e.g.
/// "FP32"), u64 rank, u64 × rank dimensions`, then for packed data `u64 byte
/// length, bytes`, for strings `u64 count, (u64 length, bytes) × count`.
pub fn digest(tensors: &[Tensor]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut sorted: Vec<&Tensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    let put_bytes = |hasher: &mut Sha256, bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for tensor in sorted {
        put_bytes(&mut hasher, tensor.name.as_bytes());
        put_bytes(&mut hasher, tensor.datatype.protocol_name().as_bytes());
        hasher.update((tensor.shape.len() as u64).to_le_bytes());
        for dim in &tensor.shape {
            hasher.update(dim.to_le_bytes());
        }
        match &tensor.data {
            TensorData::Packed(bytes) => put_bytes(&mut hasher, bytes),
            TensorData::Strings(items) => {
                hasher.update((items.len() as u64).to_le_bytes());
                for item in items {
                    put_bytes(&mut hasher, item);
                }
            }
        }
    }
    hasher.finalize().into()
}

fn element_count(shape: &[u64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
}

/// What a brain declares it accepts or produces: name, type and shape, where a
/// dimension of `-1` accepts any size (a batch or sequence axis).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.name,
            self.datatype,
            ShapeDisplay(&self.shape)
        )
    }
}

struct ShapeDisplay<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for ShapeDisplay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, dim) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}

/// Limits a request must respect beyond its declared shapes.
#[derive(Clone, Copy, Debug)]
pub struct TensorLimits {
    /// Largest number of elements in any one tensor.
    pub max_elements: u64,
}

impl Default for TensorLimits {
    fn default() -> Self {
        // 16 Mi elements is 64 MiB of FP32: far above anything a specialist brain
        // needs, far below what would let one request exhaust a brain's memory.
        TensorLimits {
            max_elements: 16 * 1024 * 1024,
        }
    }
}

/// Checks `tensors` against the declared `specs`: every declared tensor present
/// exactly once, nothing undeclared, types and shapes as declared, data
/// consistent with both.
pub fn validate(
    tensors: &[Tensor],
    specs: &[TensorSpec],
    limits: TensorLimits,
) -> Result<(), TensorError> {
    let expected = || specs.iter().map(ToString::to_string).collect::<Vec<_>>();
    for (i, tensor) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|t| t.name == tensor.name) {
            return Err(TensorError::Duplicate {
                name: tensor.name.clone(),
            });
        }
        let Some(spec) = specs.iter().find(|s| s.name == tensor.name) else {
            return Err(TensorError::Unknown {
                name: tensor.name.clone(),
                expected: expected(),
            });
        };
        if tensor.datatype != spec.datatype {
            return Err(TensorError::WrongDatatype {
                name: tensor.name.clone(),
                expected: spec.datatype,
                got: tensor.datatype,
            });
        }
        let shape_matches = tensor.shape.len() == spec.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&spec.shape)
                .all(|(&got, &want)| want < 0 || got == want as u64);
        if !shape_matches {
            return Err(TensorError::WrongShape {
                name: tensor.name.clone(),
                expected: spec.shape.clone(),
                got: tensor.shape.clone(),
            });
        }
        let count = tensor
            .element_count()
            .ok_or_else(|| TensorError::ShapeOverflow {
                name: tensor.name.clone(),
                shape: tensor.shape.clone(),
            })?;
        if count > limits.max_elements {
            return Err(TensorError::TooLarge {
                name: tensor.name.clone(),
                elements: count,
                limit: limits.max_elements,
            });
        }
        tensor.check_consistent()?;
    }
    if let Some(missing) = specs
        .iter()
        .find(|s| !tensors.iter().any(|t| t.name == s.name))
    {
        return Err(TensorError::Missing {
            name: missing.name.clone(),
            expected: expected(),
        });
    }
    Ok(())
}

/// Why a tensor was refused. Every message names the tensor and says what was
/// expected, so the caller can fix the request without reading source code.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    #[error("input `{name}` is missing; this brain expects: {}", expected.join("; "))]
    Missing { name: String, expected: Vec<String> },
    #[error("input `{name}` is not one this brain accepts; it expects: {}", expected.join("; "))]
    Unknown { name: String, expected: Vec<String> },
    #[error("input `{name}` is given twice; give each input once")]
    Duplicate { name: String },
    #[error("input `{name}` has datatype {got}, but this brain expects {expected}")]
    WrongDatatype {
        name: String,
        expected: DataType,
        got: DataType,
    },
    #[error(
        "input `{name}` has shape {}, but this brain expects {} (-1 means any size)",
        ShapeDisplay(got),
        ShapeDisplay(expected)
    )]
    WrongShape {
        name: String,
        expected: Vec<i64>,
        got: Vec<u64>,
    },
    #[error(
        "tensor `{name}` has shape {} whose element count overflows",
        ShapeDisplay(shape)
    )]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error(
        "tensor `{name}` has {elements} elements, over the limit of {limit}; split the request"
    )]
    TooLarge {
        name: String,
        elements: u64,
        limit: u64,
    },
    #[error(
        "tensor `{name}` ({datatype}, shape {}) needs {expected} {unit} of data but carries {got}",
        ShapeDisplay(shape),
        unit = if *datatype == DataType::Bytes { "strings" } else { "bytes" }
    )]
    DataLength {
        name: String,
        datatype: DataType,
        shape: Vec<u64>,
        expected: u64,
        got: u64,
    },
    #[error("tensor `{name}` is {datatype} but carries the other kind of data (packed vs strings)")]
    DataKind { name: String, datatype: DataType },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn round_trips_every_numeric_type() {
        let t = Tensor::from_elements("x", vec![2, 2], &[1.5f32, -2.0, 0.0, f32::MAX]);
        assert_eq!(
            t.to_elements::<f32>().unwrap(),
            vec![1.5, -2.0, 0.0, f32::MAX]
        );
        let t = Tensor::from_elements("y", vec![3], &[i64::MIN, 0, i64::MAX]);
        assert_eq!(t.to_elements::<i64>().unwrap(), vec![i64::MIN, 0, i64::MAX]);
        let t = Tensor::from_elements("b", vec![2], &[true, false]);
        assert_eq!(t.to_elements::<bool>().unwrap(), vec![true, false]);
        assert!(
            t.to_elements::<u8>().is_err(),
            "type confusion must be refused"
        );
    }

    #[test]
    fn validation_accepts_dynamic_axes_and_refuses_everything_else() {
        let specs = [
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("sr", DataType::Int64, &[]),
        ];
        let x = Tensor::from_elements("x", vec![3, 4], &[0f32; 12]);
        let sr = Tensor::from_elements("sr", vec![], &[16000i64]);
        let limits = TensorLimits::default();
        validate(&[x.clone(), sr.clone()], &specs, limits).unwrap();

        let wrong_dim = Tensor::from_elements("x", vec![3, 5], &[0f32; 15]);
        assert!(matches!(
            validate(&[wrong_dim, sr.clone()], &specs, limits),
            Err(TensorError::WrongShape { .. })
        ));
        let wrong_type = Tensor::from_elements("x", vec![3, 4], &[0i64; 12]);
        assert!(matches!(
            validate(&[wrong_type, sr.clone()], &specs, limits),
            Err(TensorError::WrongDatatype { .. })
        ));
        assert!(matches!(
            validate(std::slice::from_ref(&x), &specs, limits),
            Err(TensorError::Missing { .. })
        ));
        let extra = Tensor::from_elements("z", vec![1], &[0f32]);
        assert!(matches!(
            validate(&[x.clone(), sr.clone(), extra], &specs, limits),
            Err(TensorError::Unknown { .. })
        ));
        assert!(matches!(
            validate(&[x.clone(), x.clone(), sr.clone()], &specs, limits),
            Err(TensorError::Duplicate { .. })
        ));
        let mut short = x.clone();
        short.data = TensorData::Packed(vec![0; 7]);
        assert!(matches!(
            validate(&[short, sr.clone()], &specs, limits),
            Err(TensorError::DataLength {
                expected: 48,
                got: 7,
                ..
            })
        ));
        let tight = TensorLimits { max_elements: 11 };
        assert!(matches!(
            validate(&[x, sr], &specs, tight),
            Err(TensorError::TooLarge { .. })
        ));
    }

    #[test]
    fn overflowing_shapes_are_refused_not_wrapped() {
        let mut t = Tensor::from_elements("x", vec![1], &[0f32]);
        t.shape = vec![u64::MAX, 4];
        let specs = [spec("x", DataType::Fp32, &[-1, -1])];
        assert!(matches!(
            validate(&[t], &specs, TensorLimits::default()),
            Err(TensorError::ShapeOverflow { .. })
        ));
    }

    #[test]
    fn digest_ignores_order_and_sees_every_change() {
        let a = Tensor::from_elements("a", vec![2], &[1.0f32, 2.0]);
        let b = Tensor::from_strings("b", vec![1], &["text"]);
        let base = digest(&[a.clone(), b.clone()]);
        assert_eq!(base, digest(&[b.clone(), a.clone()]));
        let mut renamed = a.clone();
        renamed.name = "c".into();
        let mut reshaped = a.clone();
        reshaped.shape = vec![1, 2];
        let changed = Tensor::from_elements("a", vec![2], &[1.0f32, 2.5]);
        let text = Tensor::from_strings("b", vec![1], &["texT"]);
        for other in [
            digest(&[renamed, b.clone()]),
            digest(&[reshaped, b.clone()]),
            digest(&[changed, b.clone()]),
            digest(&[a.clone(), text]),
            digest(&[a]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn errors_read_as_instructions() {
        let err = TensorError::WrongShape {
            name: "x".into(),
            expected: vec![-1, 4],
            got: vec![3, 5],
        };
        assert_eq!(
            err.to_string(),
            "input `x` has shape [3, 5], but this brain expects [-1, 4] (-1 means any size)"
        );
    }
}
