from setuptools import find_packages, setup

PACKAGE_NAME = "dp_recorder"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml", "README.md"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Diffusion Policy ROS maintainers",
    maintainer_email="maintainers@example.org",
    description=(
        "The demonstration recorder: teleoperated episodes to rosbag2 (MCAP), one bag per episode."
    ),
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "recorder_node = dp_recorder.recorder_node:main",
            "recover = dp_recorder.recover:main",
            "pattern_publisher = dp_recorder.testing.pattern_publisher:main",
        ]
    },
)
