"""The floor of a sensor run: Metaflow's own cost of a two-step flow that does nothing."""

from metaflow import FlowSpec, step


class BareFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BareFlow()
