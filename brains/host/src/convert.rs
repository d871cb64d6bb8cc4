//! Wire tensors to ONNX Runtime values and back.
//!
//! A wire [`Tensor`] carries packed little-endian bytes; ONNX Runtime wants a
//! typed, native-endian buffer. Every packed [`DataType`] maps to exactly one
//! ONNX element type:
//!
//! | sios    | ONNX Runtime | Rust   |
//! |---------|--------------|--------|
//! | BOOL    | bool         | `bool` |
//! | UINT8   | uint8        | `u8`   |
//! | INT8    | int8         | `i8`   |
//! | INT32   | int32        | `i32`  |
//! | INT64   | int64        | `i64`  |
//! | FP32    | float        | `f32`  |
//! | FP64    | double       | `f64`  |
//!
//! BYTES has no ONNX counterpart here: text reaches a model only through the
//! tokenizer (see [`crate::tokenize`]). Values are copied once in each
//! direction, and floating-point bits are carried unchanged (NaN payloads and
//! `-0.0` included).

use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, ValueType};
use sios_ipc::tensor::Element;
use sios_ipc::{BrainError, DataType, Tensor, TensorError};
use std::fmt::Debug;

/// The sios data type of an ONNX element type, if sios can carry it.
pub fn datatype_of(element: TensorElementType) -> Option<DataType> {
    Some(match element {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        _ => return None,
    })
}

/// Copies a (validated) wire tensor into a new ONNX Runtime value.
pub fn to_ort(tensor: &Tensor) -> Result<DynValue, BrainError> {
    let shape = tensor
        .shape
        .iter()
        .map(|&dim| i64::try_from(dim))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| TensorError::ShapeOverflow {
            name: tensor.name.clone(),
            shape: tensor.shape.clone(),
        })?;
    match tensor.datatype {
        DataType::Bool => packed::<bool>(tensor, shape),
        DataType::Uint8 => packed::<u8>(tensor, shape),
        DataType::Int8 => packed::<i8>(tensor, shape),
        DataType::Int32 => packed::<i32>(tensor, shape),
        DataType::Int64 => packed::<i64>(tensor, shape),
        DataType::Fp32 => packed::<f32>(tensor, shape),
        DataType::Fp64 => packed::<f64>(tensor, shape),
        DataType::Bytes => Err(BrainError::Runtime(format!(
            "input `{}` is BYTES, which only a tokenising brain accepts",
            tensor.name
        ))),
    }
}

/// Builds an ONNX Runtime tensor from a shape and row-major elements.
pub fn from_elements<T>(shape: Vec<i64>, values: Vec<T>) -> Result<DynValue, BrainError>
where
    T: PrimitiveTensorElementType + Debug + Clone + 'static,
{
    ort::value::Tensor::from_array((shape, values))
        .map(|value| value.into_dyn())
        .map_err(|err| BrainError::Runtime(format!("could not create an input tensor: {err}")))
}

fn packed<T>(tensor: &Tensor, shape: Vec<i64>) -> Result<DynValue, BrainError>
where
    T: Element + PrimitiveTensorElementType + Debug + Clone + 'static,
{
    from_elements(shape, tensor.to_elements::<T>()?)
}

/// Copies an ONNX Runtime output into a wire tensor named `name`.
pub fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, BrainError> {
    let unsupported = |reason: String| BrainError::Output {
        name: name.to_owned(),
        reason,
    };
    let element = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(unsupported(format!("it is a {other}, not a tensor"))),
    };
    match datatype_of(element) {
        Some(DataType::Bool) => unpacked::<bool>(name, value),
        Some(DataType::Uint8) => unpacked::<u8>(name, value),
        Some(DataType::Int8) => unpacked::<i8>(name, value),
        Some(DataType::Int32) => unpacked::<i32>(name, value),
        Some(DataType::Int64) => unpacked::<i64>(name, value),
        Some(DataType::Fp32) => unpacked::<f32>(name, value),
        Some(DataType::Fp64) => unpacked::<f64>(name, value),
        Some(DataType::Bytes) | None => Err(unsupported(format!(
            "its element type is {element}; sios carries BOOL, UINT8, INT8, INT32, INT64, FP32 and FP64"
        ))),
    }
}

fn unpacked<T>(name: &str, value: &DynValue) -> Result<Tensor, BrainError>
where
    T: Element + PrimitiveTensorElementType,
{
    let (shape, data) = value
        .try_extract_tensor::<T>()
        .map_err(|err| BrainError::Output {
            name: name.to_owned(),
            reason: err.to_string(),
        })?;
    let shape = shape
        .iter()
        .map(|&dim| u64::try_from(dim))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| BrainError::Output {
            name: name.to_owned(),
            reason: format!("ONNX Runtime reported a negative dimension in shape {shape:?}"),
        })?;
    Ok(Tensor::from_elements(name, shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{runtime_or_skip, samples};

    #[test]
    fn every_datatype_maps_to_one_onnx_type() {
        let packed: Vec<DataType> = DataType::ALL
            .into_iter()
            .filter(|dt| *dt != DataType::Bytes)
            .collect();
        let onnx = [
            TensorElementType::Bool,
            TensorElementType::Uint8,
            TensorElementType::Int8,
            TensorElementType::Int32,
            TensorElementType::Int64,
            TensorElementType::Float32,
            TensorElementType::Float64,
        ];
        assert_eq!(onnx.map(|t| datatype_of(t).unwrap()).to_vec(), packed);
        assert_eq!(datatype_of(TensorElementType::Float16), None);
        assert_eq!(datatype_of(TensorElementType::String), None);
        assert_eq!(datatype_of(TensorElementType::Uint64), None);
    }

    #[test]
    fn every_datatype_round_trips_through_ort_values_bit_for_bit() {
        if runtime_or_skip("every_datatype_round_trips_through_ort_values_bit_for_bit").is_none() {
            return;
        }
        for shape in [vec![], vec![6], vec![2, 3], vec![0], vec![3, 0, 2]] {
            for tensor in samples(&shape) {
                let value = to_ort(&tensor).unwrap();
                let ValueType::Tensor {
                    ty,
                    shape: ort_shape,
                    ..
                } = value.dtype()
                else {
                    panic!("not a tensor")
                };
                assert_eq!(datatype_of(*ty), Some(tensor.datatype));
                assert_eq!(
                    ort_shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
                    shape
                );
                let back = from_ort(&tensor.name, &value).unwrap();
                // Tensor equality compares the packed bytes: NaN payloads and -0.0 included.
                assert_eq!(back, tensor, "{} {shape:?}", tensor.name);
            }
        }
    }

    #[test]
    fn bytes_tensors_are_not_model_inputs() {
        let text = Tensor::from_strings("text", vec![1], &["hello"]);
        assert!(matches!(to_ort(&text), Err(BrainError::Runtime(_))));
    }

    #[test]
    fn dimensions_beyond_i64_are_refused_not_wrapped() {
        let mut tensor = Tensor::from_elements("x", vec![0], &[0f32; 0]);
        tensor.shape = vec![0, u64::MAX];
        assert!(matches!(
            to_ort(&tensor),
            Err(BrainError::Input(TensorError::ShapeOverflow { .. }))
        ));
    }
}
