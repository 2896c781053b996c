from .events import EventKind as EventKind, EventLog as EventLog
from .flow import piecewise_flow as piecewise_flow, solve_piecewise as solve_piecewise
