"""The bare two-step flow plus the blank ``@card`` that SensorFlow's end step carries."""

from metaflow import FlowSpec, card, step


class BareCardFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @card(type="blank", id="sensor")
    @step
    def end(self):
        pass


if __name__ == "__main__":
    BareCardFlow()
