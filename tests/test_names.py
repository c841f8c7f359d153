import pytest

from shared.names import InvalidName, validate_name


@pytest.mark.parametrize("good", ["alice", "Zoë O'Neil", "desk-01", "A.B_c 2", "李雷"])
def test_valid_names(good):
    assert validate_name(f"  {good} ") == good


@pytest.mark.parametrize(
    "bad", ["", "   ", "../x", "a/b", "a\\b", "..", ".hidden", "x" * 65, "a\nb", "<script>", None, 3, "_x"]
)
def test_invalid_names(bad):
    with pytest.raises(InvalidName):
        validate_name(bad)
