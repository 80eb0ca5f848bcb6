//! Proves that libtorch links and runs: a tensor made through tch goes through a convolution.
use tch::{Kind, Tensor};

#[test]
fn conv2d_through_libtorch() {
    // 1x1x3x3 input of ones, a 2x2 kernel of ones: every output is the sum of a 2x2 window = 4.
    let input = Tensor::ones([1, 1, 3, 3], (Kind::Float, tch::Device::Cpu));
    let weight = Tensor::ones([1, 1, 2, 2], (Kind::Float, tch::Device::Cpu));
    let out = input.conv2d(&weight, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
    assert_eq!(out.size(), vec![1, 1, 2, 2]);
    let values: Vec<f32> = Vec::<f32>::try_from(out.flatten(0, -1)).expect("float tensor");
    assert_eq!(values, vec![4.0; 4]);
    // A non-trivial kernel checks the arithmetic, not just the shape.
    let x = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., 7., 8., 9.]).reshape([1, 1, 3, 3]);
    let w = Tensor::from_slice(&[1f32, 0., 0., -1.]).reshape([1, 1, 2, 2]);
    let y: Vec<f32> = Vec::<f32>::try_from(x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1).flatten(0, -1)).expect("float");
    assert_eq!(y, vec![-4.0, -4.0, -4.0, -4.0]);
}
