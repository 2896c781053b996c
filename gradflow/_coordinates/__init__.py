from .base import AbstractCoordinates as AbstractCoordinates
from .cartesian import Cartesian as Cartesian
from .scale_free import ScaleFree as ScaleFree
