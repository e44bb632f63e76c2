"""vidplan's application: the ``vidplan`` command line (``cli``) and the jobs it runs (``jobs``: simulated data
generation, closed-loop evaluation in the simulator), on top of the library (``vidplan_core``), the ROS nodes
(``vidplan_ros``), the simulator (``vidplan_sim``) and the bring-up (``vidplan_bringup``). Nothing imports it."""
