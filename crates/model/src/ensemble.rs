//! An ensemble backbone ([`crate::Arch::Ensemble`]): several backbones run on the same input,
//! their pooled features concatenated in member order.

use tch::Tensor;

use crate::Net;

/// The members' backbones, in order.
#[derive(Debug)]
pub(crate) struct Ensemble {
    pub(crate) members: Vec<Box<dyn Net>>,
}

impl Net for Ensemble {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let feats: Vec<Tensor> = self.members.iter().map(|m| m.forward_t(xs, train)).collect();
        Tensor::cat(&feats, 1)
    }

    fn fold_batchnorm(&mut self) -> usize {
        self.members.iter_mut().map(|m| m.fold_batchnorm()).sum()
    }

    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.members.iter_mut().try_for_each(|m| m.set_channels_last(on))
    }
}
