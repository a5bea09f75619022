from netlayers.errors import ConfigError, DataError


def test_located_fills_only_what_is_unknown():
    err = ConfigError("bad", field="num_output").located(file="net.yaml", line=4, layer="ip", field="x")
    assert str(err) == "net.yaml:4: layer 'ip': field 'num_output': bad"


def test_an_error_naming_another_file_takes_no_line_from_the_config():
    err = DataError("truncated", file="/data/images.idx").located(file="net.yaml", line=3, layer="data")
    assert str(err) == "/data/images.idx: layer 'data': truncated"
