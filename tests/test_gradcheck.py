import numpy as np

from netlayers.gradcheck import check_layer, check_net


def test_report_lists_every_bottom_and_param_with_worst_errors():
    rng = np.random.default_rng(0)
    report = check_layer(
        {
            "type": "InnerProduct",
            "inner_product_param": {
                "num_output": 3,
                "weight_filler": {"type": "gaussian"},
                "bias_filler": {"type": "gaussian"},
            },
        },
        [rng.standard_normal((2, 4))],
    )
    assert [b.name for b in report.blobs] == ["bottom[0]", "param[0]", "param[1]"]
    assert [b.checked for b in report.blobs] == [8, 12, 3]
    assert report.passed and report.worst_relative < 1e-6
    table = report.table()
    assert "worst rel err" in table and "param[1]" in table and "InnerProduct" in table


def test_kinks_are_skipped_not_failed():
    x = np.array([-1.0, 0.0, 2.0, 0.0, 3.0])
    report = check_layer({"type": "ReLU"}, [x])
    assert report.passed
    assert report.blobs[0].skipped == 2 and report.blobs[0].checked == 3


def test_labels_are_not_checked():
    report = check_layer({"type": "SoftmaxWithLoss"}, [np.zeros((2, 3)), np.array([0, 2])])
    assert [b.name for b in report.blobs] == ["bottom[0]"]


def test_max_elements_bounds_the_work():
    report = check_layer({"type": "Sigmoid"}, [np.linspace(-2, 2, 1000)], max_elements=50)
    assert report.blobs[0].checked == 50


def test_a_wrong_gradient_fails_with_its_index():
    from netlayers.layers.neuron import TanH

    class BrokenTanH(TanH):
        def Backward_cpu(self, top, propagate_down, bottom):
            super().Backward_cpu(top, propagate_down, bottom)
            bottom[0].diff[1] *= 1.5

    from netlayers.registry import register_layer

    register_layer("TestOnlyBrokenTanH")(BrokenTanH)
    report = check_layer({"type": "TestOnlyBrokenTanH"}, [np.array([0.1, 0.2, 0.3])])
    assert not report.passed
    assert report.blobs[0].worst_index == (1,)


def test_whole_net_check_with_a_shared_threshold():
    spec = {
        "name": "n",
        "layers": [
            {"name": "in", "type": "Input", "top": ["x"], "input_param": {"shape": {"dim": [3, 2]}}},
            {"name": "t", "type": "TanH", "bottom": "x", "top": "y"},
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "y",
                "top": "z",
                "loss_weight": 1,
                "inner_product_param": {"num_output": 2, "weight_filler": {"type": "gaussian"}},
            },
        ],
    }
    report = check_net(spec, threshold=1e-7)
    assert report.passed and report.threshold == 1e-7
    assert {b.name for b in report.blobs} == {"input x", "param ip[0]", "param ip[1]"}


def test_check_net_draws_class_indices_for_label_inputs():
    spec = {
        "name": "labelled",
        "layers": [
            {
                "name": "data",
                "type": "Input",
                "top": ["x", "label"],
                "input_param": {"shape": [{"dim": [4, 3]}, {"dim": [4]}]},
            },
            {
                "name": "ip",
                "type": "InnerProduct",
                "bottom": "x",
                "top": "z",
                "inner_product_param": {"num_output": 5, "weight_filler": {"type": "xavier"}},
            },
            {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["z", "label"], "top": "loss"},
        ],
    }
    report = check_net(spec)
    assert report.passed, report.table()
    assert {b.name for b in report.blobs} >= {"input x", "param ip[0]", "param ip[1]"}
