"""What draws and what a learner clicks: figures (plots), the training panel (ui), the run doctor,
the memory planner's panel. Views import nbkit.core and nbkit.labs, never nbkit.interfaces."""
