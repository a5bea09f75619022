"""Caffe's protobuf messages, as ``from netlayers.caffe.proto import caffe_pb2`` (pycaffe's ``caffe.proto``)."""

from . import caffe_pb2

__all__ = ["caffe_pb2"]
