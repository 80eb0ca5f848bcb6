//! An ensemble backbone ([`crate::Arch::Ensemble`]): several backbones run on the same input,
//! their pooled features concatenated in member order.
//!
//! Members that share their units (EfficientNet-Lite0/1/2: `stem`, `stage1`..`stage7`, `head`) can
//! be split between units like one network, for partial mode: the frozen part's activation map is
//! the members' maps after the same number of units, concatenated along the channels (they have the
//! same height and width, all members having the same strides), and the trainable part splits it
//! back by each member's channel count.

use std::ops::Range;

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

    /// From the images (`units` starting at 0), every member's output concatenated along the
    /// channels; from an activation map, the map split by member first. `None` where a member
    /// cannot be split or the members' maps do not line up.
    fn forward_units(&self, xs: &Tensor, units: Range<usize>, train: bool) -> Option<Tensor> {
        let outs = if units.start == 0 {
            self.members.iter().map(|m| m.forward_units(xs, units.clone(), train)).collect::<Option<Vec<_>>>()?
        } else {
            let widths = self.members.iter().map(|m| m.channels_after(units.start)).collect::<Option<Vec<i64>>>()?;
            if xs.size().get(1) != Some(&widths.iter().sum()) {
                return None;
            }
            let parts = xs.f_split_with_sizes(&widths, 1).ok()?;
            self.members.iter().zip(&parts).map(|(m, p)| m.forward_units(p, units.clone(), train)).collect::<Option<Vec<_>>>()?
        };
        Tensor::f_cat(&outs, 1).ok()
    }

    fn channels_after(&self, units: usize) -> Option<i64> {
        self.members.iter().map(|m| m.channels_after(units)).sum()
    }

    fn fold_batchnorm(&mut self) -> usize {
        self.members.iter_mut().map(|m| m.fold_batchnorm()).sum()
    }

    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.members.iter_mut().try_for_each(|m| m.set_channels_last(on))
    }
}
