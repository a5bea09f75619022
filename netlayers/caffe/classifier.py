"""pycaffe's ``caffe.Classifier``: a deploy net that classifies images, whole or by ten crops."""

from typing import Any

import numpy as np

from ..errors import DataError
from . import io as caffe_io
from .pycaffe import TEST, Net

__all__ = ["Classifier"]


class Classifier(Net):
    """A ``caffe.Net`` in the TEST phase that predicts class probabilities for images, as
    pycaffe's: images are resized to ``image_dims`` (default: the net input's height and width),
    then cropped to the input's size (the centre, or ten crops averaged) and prepared by a
    :class:`~netlayers.caffe.io.Transformer` (``self.transformer``): transposed to K x H x W,
    then ``channel_swap``, ``raw_scale``, ``mean`` and ``input_scale`` as given."""

    def __init__(
        self,
        model_file: Any,
        pretrained_file: Any,
        image_dims: Any = None,
        mean: Any = None,
        input_scale: Any = None,
        raw_scale: Any = None,
        channel_swap: Any = None,
    ) -> None:
        super().__init__(model_file, TEST, weights=pretrained_file)
        if not self.inputs:
            raise DataError("caffe.Classifier: the net has no Input layer to feed images to")
        in_ = self.inputs[0]
        input_shape = self.blobs[in_].data.shape
        if len(input_shape) != 4:
            raise DataError(f"caffe.Classifier: input '{in_}' has shape {input_shape}, expected (N, K, H, W)")
        self.transformer = caffe_io.Transformer({in_: input_shape})
        self.transformer.set_transpose(in_, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(in_, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(in_, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(in_, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(in_, channel_swap)
        self.crop_dims = np.array(input_shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs: Any, oversample: bool = True) -> np.ndarray:
        """Class probabilities (N x C) of N images (H x W x K arrays): the mean over each image's
        ten crops (corners, centre, and their mirrors) when ``oversample``, else the centre
        crop's. The first output of the net is taken as the probabilities."""
        if len(inputs) == 0:
            raise DataError("Classifier.predict: no images given")
        height, width = (int(d) for d in self.image_dims)
        resized = np.stack([caffe_io.resize_image(image, (height, width)) for image in inputs])
        if oversample:
            crops = caffe_io.oversample(resized, self.crop_dims)
        else:
            crop_h, crop_w = (int(d) for d in self.crop_dims)
            if crop_h > height or crop_w > width:
                raise DataError(
                    f"Classifier: image_dims {(height, width)} are smaller than the input {(crop_h, crop_w)}"
                )
            top, left = caffe_io.center_crop_starts((height, width), self.crop_dims)
            crops = resized[:, top : top + crop_h, left : left + crop_w]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
