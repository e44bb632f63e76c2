"""vidplan_sim: the MuJoCo DROID scene and the sim_node speaking the robot topics."""
