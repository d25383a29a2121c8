"""gradexp's Hydra plugin. Hydra only instantiates plugins from the `hydra_plugins` namespace
package, so the sweeper lives here rather than in `gradexp/`."""
