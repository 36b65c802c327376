from setuptools import find_packages, setup

PACKAGE_NAME = "dp_sim"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Diffusion Policy ROS maintainers",
    maintainer_email="maintainers@example.org",
    description=(
        "Simulated robots that behave like ROS 2 robots: PushT (gym-pusht) and a Panda arm on "
        "the Robomimic tasks (robosuite, MuJoCo), each with a scripted teleoperation expert."
    ),
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "sim_node = dp_sim.sim_node:main",
            "expert_node = dp_sim.expert_node:main",
            "arm_sim_node = dp_sim.arm_sim_node:main",
            "arm_expert_node = dp_sim.arm_expert_node:main",
        ]
    },
)
