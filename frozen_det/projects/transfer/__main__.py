from frozen_det.projects import runner
from frozen_det.projects.transfer import STUDY

runner.main(STUDY)
