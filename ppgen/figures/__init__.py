"""Figures shared by runs, reports and notebooks: image grids and piano rolls."""
from .images import image_grid, show_images
from .piano_rolls import plot_continuations, plot_piano_rolls

__all__ = ["image_grid", "show_images", "plot_piano_rolls", "plot_continuations"]
