"""Replicas are built once per test session (each takes well under a second) and read-only afterwards."""

import pytest

import study_replicas as replicas


@pytest.fixture(scope="session")
def algonauts(tmp_path_factory):
    return replicas.make_algonauts(tmp_path_factory.mktemp("datapath_algonauts"))


@pytest.fixture(scope="session")
def wen(tmp_path_factory):
    return replicas.make_wen(tmp_path_factory.mktemp("datapath_wen"))


@pytest.fixture(scope="session")
def lahner(tmp_path_factory):
    return replicas.make_lahner(tmp_path_factory.mktemp("datapath_lahner"))


@pytest.fixture(scope="session")
def lebel(tmp_path_factory):
    return replicas.make_lebel(tmp_path_factory.mktemp("datapath_lebel"))
