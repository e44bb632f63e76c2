"""Parameters of the running planner and executor over the real parameter services (what ``ros2 param describe`` and
``ros2 param set`` call): every parameter has its docstring description; the planner's live ones change the next
cycle, every other one is read-only and refused, ranges are enforced; the executor's are all read-only."""

from __future__ import annotations

from pathlib import Path

import pytest
import rclpy
from proc_helpers import node_executable, started, wait_for
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, ListParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor

from vidplan_ros import executor_params, lifecycle_manager_node, planner_params
from vidplan_ros.node_runner import parameter_docs


@pytest.fixture
def client():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("param_test_client", context=ctx)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _call(node, srv_type, name: str, request, timeout: float = 20.0):
    cli = node.create_client(srv_type, name)
    try:
        assert cli.wait_for_service(timeout_sec=60.0), f"{name} not available"
        fut = cli.call_async(request)
        ex = SingleThreadedExecutor(context=node.context)
        ex.add_node(node)
        ex.spin_until_future_complete(fut, timeout_sec=timeout)
        ex.remove_node(node)
        assert fut.done(), f"{name}: no response in {timeout} s"
        return fut.result()
    finally:
        node.destroy_client(cli)


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


def _set(node, target: str, **values):
    req = SetParameters.Request(parameters=[Parameter(name=k, value=_value(v)) for k, v in values.items()])
    return _call(node, SetParameters, f"/{target}/set_parameters", req).results


def _describe(node, target: str) -> dict:
    names = _call(node, ListParameters, f"/{target}/list_parameters", ListParameters.Request()).result.names
    # rclpy's own parameters are not ours to document
    names = [n for n in names if n not in ("use_sim_time", "start_type_description_service")
             and not n.startswith("qos_overrides")]
    got = _call(node, DescribeParameters, f"/{target}/describe_parameters", DescribeParameters.Request(names=names))
    return {d.name: d for d in got.descriptors}


def test_every_node_parameter_is_documented_in_its_module_docstring():
    import re

    for mod, pattern in ((planner_params, r'p\("([a-z_0-9]+)"'), (executor_params, r'p\("([a-z_0-9]+)"'),
                         (lifecycle_manager_node, r'(?:p|declare_parameter)\(\s*"([a-z_0-9]+)"')):
        declared = set(re.findall(pattern, Path(mod.__file__).read_text()))
        if mod is executor_params:  # declared in a loop: ik_<field> for each IK option
            from vidplan_core.execution import IKOptions

            declared |= {f"ik_{f}" for f in IKOptions.model_fields}
        docs = parameter_docs(mod.__doc__)
        assert declared and declared <= set(docs), (mod.__name__, sorted(declared - set(docs)))
        assert all(docs[n] for n in declared), [n for n in declared if not docs[n]]


@pytest.mark.slow
def test_described_live_and_read_only_parameters_over_the_parameter_services(tmp_path, tiny_model_dir, client):
    planner_cmd = [node_executable("vidplan_ros", "planner_node"), "--ros-args", "-p", f"model_dir:={tiny_model_dir}",
                   "-p", "threads:=1"]
    exe_cmd = [node_executable("vidplan_ros", "executor_node")]
    env = {"OMP_NUM_THREADS": "1"}
    with started(planner_cmd, tmp_path / "planner.log", env=env) as planner, \
            started(exe_cmd, tmp_path / "exe.log", env=env) as exe:
        assert wait_for(lambda: "planner ready" in planner.output(), 120), planner.output()[-3000:]
        assert "1 intra-op threads" in planner.output()
        docs = parameter_docs(planner_params.__doc__)
        desc = _describe(client, "planner_node")
        assert {"kappa", "refine_iters", "refine_tol", "threads", "model_dir"} <= set(desc)
        for name, d in desc.items():
            assert d.description == docs[name], name
            assert d.read_only == (name not in planner_params.LIVE_PARAMETERS), name
        assert desc["kappa"].floating_point_range[0].from_value == 0.0
        # live: accepted and applied (set_parameters applies them one by one; the node logs what the next cycle uses)
        res = _set(client, "planner_node", kappa=5.0, basis_speed_mps=0.05)
        assert all(r.successful for r in res), [r.reason for r in res]
        assert wait_for(lambda: "live parameters: kappa=5.0" in planner.output()
                        and "basis_speed_mps=0.05" in planner.output(), 10), planner.output()[-2000:]
        # read-only, out of range, a bad choice: refused with the reason, nothing changed
        (ro,) = _set(client, "planner_node", refine_iters=2)
        assert not ro.successful and "read-only" in ro.reason.lower(), ro.reason
        (neg,) = _set(client, "planner_node", kappa=-1.0)
        assert not neg.successful, neg.reason
        (bad,) = _set(client, "planner_node", uncertainty_weighting="cubic")
        assert not bad.successful and "uncertainty_weighting" in bad.reason, bad.reason
        # live values get the start-up checks (one declare-and-check path for every node): an integer for a double
        # is taken as the number it is; a string or a negative integer is refused, named
        (ok,) = _set(client, "planner_node", kappa=2)
        assert ok.successful, ok.reason
        assert wait_for(lambda: "live parameters: kappa=2" in planner.output(), 10), planner.output()[-2000:]
        (txt,) = _set(client, "planner_node", kappa="abc")
        assert not txt.successful and "kappa must be a number" in txt.reason, txt.reason
        (negi,) = _set(client, "planner_node", kappa=-1)
        assert not negi.successful and "kappa must be ≥ 0.0" in negi.reason, negi.reason
        # the executor: every parameter described, none settable while it runs (all are read at start-up)
        exe_docs = parameter_docs(executor_params.__doc__)
        edesc = _describe(client, "executor")
        assert {"workspace_min", "max_plan_age_s", "gripper_interface"} <= set(edesc)
        for name, d in edesc.items():
            assert d.read_only and d.description == exe_docs[name], name
        (ro,) = _set(client, "executor", max_plan_age_s=5.0)
        assert not ro.successful and "read-only" in ro.reason.lower(), ro.reason
        assert planner.alive() and exe.alive(), planner.output()[-2000:] + exe.output()[-2000:]
